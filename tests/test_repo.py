"""The repository's own contract: CI runs exactly the README's test command; the CLI answers."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(c for c in _readme_commands() if "pytest" in c)
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert test_command in ci_lines


def test_cli_help_and_unknown_command() -> None:
    ok = subprocess.run([sys.executable, "-m", "vamba.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "doctor" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "vamba.cli", "no-such-command"], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_doctor_reports_versions() -> None:
    from vamba.doctor import report

    env = report()
    assert env["versions"]["torch"] and env["versions"]["transformers"]
    # no CUDA here: every kernel-backed op reports why it uses the PyTorch reference
    assert env["kernels"] and all(isinstance(v, str) and v for v in env["kernels"].values())
