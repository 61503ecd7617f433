"""Autotuning choices kept across launches (vamba.ops.autotune) with real Triton autotuners, run on the CPU by
Triton's interpreter (TRITON_INTERPRET=1) in fresh processes, as launches are. A kernel whose configs carry a
pre_hook, as mamba-ssm's backward kernels do. Without a GPU, Triton cannot benchmark, so a launch that ran the kernel
got its config from the saved choice; with one, Triton's own message says whether it benchmarked. Skipped where
Triton is not installed (CPU CI: the CPU torch does not need it); scripts/gpu/train_launched.sh runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

KERNELS = '''
import triton
import triton.language as tl


def zero(nargs):
    nargs["out"].zero_()


@triton.autotune(configs=[triton.Config({"B": 16}, num_warps=4, pre_hook=zero),
                          triton.Config({"B": 32}, num_warps=8, pre_hook=zero)], key=["n"])
@triton.jit
def fill_block(out, n, B: tl.constexpr):
    offs = tl.program_id(0) * B + tl.arange(0, B)
    tl.store(out + offs, tl.zeros([B], dtype=tl.float32) + B, mask=offs < n)
'''

RUN = '''
import torch, triton
from tiny_kernels import fill_block
out = torch.full((80,), float("nan"))
fill_block[lambda meta: (triton.cdiv(64, meta["B"]),)](out, 64)
print(out[0].item(), out[70].item())
'''


def launch(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_PRINT_AUTOTUNING": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_saved_choice_runs_without_benchmarking_in_the_next_launch(tmp_path: Path) -> None:
    (tmp_path / "tiny_kernels.py").write_text(KERNELS)
    choices = tmp_path / "cache" / "choices.json"
    # First launch: the choice Triton's run() stores after benchmarking (a GPU's job), then saved.
    first = launch(tmp_path, f'''
        from vamba.ops.autotune import save
        from tiny_kernels import fill_block
        fill_block.cache[(64, "torch.float32")] = fill_block.configs[1]
        print(save({str(choices)!r}, prefixes=("tiny_kernels",)))
    ''')
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["1"]
    stored = json.loads(choices.read_text())
    assert stored["kernels"] == {"tiny_kernels.fill_block": [
        {"key": [64, "torch.float32"], "config": str(__import__("triton").Config({"B": 32}, num_warps=8))}]}

    # Without the choice the next launch benchmarks: on a GPU it says so, on the CPU the interpreter cannot.
    bare = launch(tmp_path, RUN)
    if torch.cuda.is_available():
        assert bare.returncode == 0 and "Triton autotuning for function fill_block" in bare.stdout, bare.stderr
    else:
        assert bare.returncode != 0 and "active drivers" in bare.stderr

    # With it restored, the kernel runs the saved config (B = 32) and its pre_hook (the tail zeroed), tuning nothing.
    again = launch(tmp_path, textwrap.dedent(f'''
        from vamba.ops.autotune import restore
        import tiny_kernels
        print(restore({str(choices)!r}, prefixes=("tiny_kernels",)))
    ''') + RUN)
    assert again.returncode == 0, again.stderr
    counts, values = again.stdout.splitlines()
    assert counts == "{'restored': 1, 'stale': 0}" and values == "32.0 0.0"
    assert "Triton autotuning for function" not in again.stdout + again.stderr


def test_stale_damaged_and_merged_files(tmp_path: Path) -> None:
    (tmp_path / "tiny_kernels.py").write_text(KERNELS)
    choices = tmp_path / "choices.json"
    other = {"key": [128, "torch.float32"], "config": "B: 16, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None"}
    choices.write_text(json.dumps({"format": 1, "kernels": {
        "tiny_kernels.fill_block": [other, {"key": [64, "torch.float32"], "config": "B: 64, num_warps: 2"}],
        "gone_module.kernel": [other]}}))
    out = launch(tmp_path, f'''
        from vamba.ops.autotune import restore, save
        from tiny_kernels import fill_block
        print(restore({str(choices)!r}, prefixes=("tiny_kernels",)))
        print(sorted(fill_block.cache))
        fill_block.cache[(64, "torch.float32")] = fill_block.configs[1]
        save({str(choices)!r}, prefixes=("tiny_kernels",))
    ''')
    assert out.returncode == 0, out.stderr
    # a config the kernel lacks (B: 64) and a kernel not imported are stale; the known one is restored
    assert out.stdout.splitlines() == ["{'restored': 1, 'stale': 2}", "[(128, 'torch.float32')]"]
    merged = json.loads(choices.read_text())["kernels"]
    assert [e["key"] for e in merged["tiny_kernels.fill_block"]] == [[128, "torch.float32"], [64, "torch.float32"]]
    assert "B: 32" in merged["tiny_kernels.fill_block"][1]["config"] and merged["gone_module.kernel"] == [other]

    choices.write_text("{not json")
    damaged = launch(tmp_path, f'''
        from vamba.ops.autotune import restore
        import tiny_kernels
        print(restore({str(choices)!r}, prefixes=("tiny_kernels",)))
    ''')
    assert damaged.returncode == 0 and damaged.stdout.strip() == "{'restored': 0, 'stale': 0}"
    assert "tuned again" in damaged.stderr


def test_the_file_names_the_gpu_and_the_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import triton

    from vamba.ops.autotune import choices_path

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    path = choices_path("NVIDIA H100 80GB HBM3")
    assert path.parent == tmp_path and path.name.startswith("vamba-autotune-NVIDIA-H100-80GB-HBM3-triton")
    assert triton.__version__ in path.name
    assert choices_path("NVIDIA H200") != path


def test_the_shipped_file_fills_what_this_machine_never_tuned(tmp_path: Path) -> None:
    (tmp_path / "tiny_kernels.py").write_text(KERNELS)
    cache, shipped = tmp_path / "cache", tmp_path / "shipped"
    out = launch(tmp_path, f'''
        import os
        os.environ["TRITON_CACHE_DIR"] = {str(cache)!r}
        from pathlib import Path
        from vamba.ops.autotune import choices_path, remember
        from vamba.utils.io import atomic_write_json
        from tiny_kernels import fill_block
        name = choices_path("Tiny GPU").name
        config = {{c.kwargs["B"]: str(c) for c in fill_block.configs}}
        entry = lambda n, b: {{"key": [n, "torch.float32"], "config": config[b]}}
        # this machine tuned n=64 to B=16; the shipped file says B=32 for n=64 and n=128
        atomic_write_json(Path({str(cache)!r}) / name, {{"format": 1, "kernels": {{"tiny_kernels.fill_block": [
            entry(64, 16)]}}}})
        atomic_write_json(Path({str(shipped)!r}) / name, {{"format": 1, "kernels": {{"tiny_kernels.fill_block": [
            entry(64, 32), entry(128, 32)]}}}})
        atomic_write_json(Path({str(shipped)!r}) / "vamba-autotune-Other-GPU.json", {{"format": 1, "kernels": {{
            "tiny_kernels.fill_block": [entry(256, 32)]}}}})
        remember("Tiny GPU", prefixes=("tiny_kernels",), shipped=Path({str(shipped)!r}))
        print(sorted((k[0], c.kwargs["B"]) for k, c in fill_block.cache.items()))
    ''')
    assert out.returncode == 0, out.stderr
    # the machine's own choice wins, the shipped one fills n=128, another GPU's file is not read
    assert out.stdout.strip() == "[(64, 16), (128, 32)]"
