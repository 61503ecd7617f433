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


WATCHED = ("torch", "transformers", "huggingface-hub", "accelerate", "datasets", "hydra-core", "deepspeed", "peft")


def _lock() -> dict[str, str]:
    lines = (ROOT / "scripts/deps/constraints-cpu.txt").read_text().splitlines()
    pins = (re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line) for line in lines)
    return {re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2) for m in pins if m}


def test_the_lock_satisfies_pyproject_and_every_watched_package_has_a_tested_upper_bound() -> None:
    """The README and CI install from the lock; pyproject's ranges must admit it, and end at a verified release."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lock = _lock()
    bounded = set()
    for text in project["dependencies"] + extras["dev"] + extras["train"]:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in lock:
            assert req.specifier.contains(lock[name], prereleases=True), f"lock {name}=={lock[name]} outside {text!r}"
        if any(spec.operator in ("<", "<=") for spec in req.specifier):
            bounded.add(name)
    assert set(WATCHED) <= bounded, f"no upper bound: {sorted(set(WATCHED) - bounded)}"
    assert lock["torch"] == "2.13.0"  # the CPU build's version, written without its +cpu label


def test_the_readme_and_ci_install_from_the_lock() -> None:
    installs = [c for c in _readme_commands() if "pip install" in c]
    assert installs and all("-c scripts/deps/constraints-cpu.txt" in c for c in installs)
    assert "-c scripts/deps/constraints-cpu.txt" in (ROOT / ".ci/run").read_text()
