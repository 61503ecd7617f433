"""The two-stage commands of docs/training.md, as written, run through ``vamba train`` at toy scale.

The commands are read from the page (the lines marked ``# stage 1, one process`` / ``# stage 2, one process``), their
placeholder paths pointed at a tiny Qwen2-VL checkpoint and the synthetic set, and only scale keys appended (model
dims, frames, batch, one step): a key the page gets wrong (a data group whose tokenizer does not exist, a missing
``stage=``) fails here as it would for a reader.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from transformers import AutoTokenizer

from tests.training.conftest import TINY
from vamba.models.presets import TinyDims, tiny_qwen2vl
from vamba.training.cli import main as train_main

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
# Keys appended to each documented command: toy scale on CPU, nothing about what the command means.
SCALE = ["model.size=tiny", "model.dtype=float32", "model.gradient_checkpointing=false", *TINY, "data.num_frames=4",
         "data.max_pixels=12544", "data.num_workers=0", "data.text_budget=1024", "data.video_budget=1024",
         "optim.per_device_batch_size=2", "optim.global_batch_size=2", "optim.max_steps=1", "optim.bf16=false",
         "device=cpu", "logging.progress=false"]


def documented_command(marker: str) -> list[str]:
    """The ``vamba train`` arguments of the command on the page's first bash block whose comment holds ``marker``."""
    text = DOC.read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    for command in block.replace("\\\n", " ").splitlines():
        if marker in command:
            words = shlex.split(command.split("#", 1)[0])
            assert words[:2] == ["vamba", "train"], words
            return words[2:]
    raise AssertionError(f"no command marked {marker!r} in {DOC}")


def _qwen2vl_checkpoint(synth: Path, out: Path) -> Path:
    """A tiny Qwen2-VL checkpoint with its tokenizer, standing in for /ckpt/Qwen2-VL-7B-Instruct."""
    tok = AutoTokenizer.from_pretrained(synth / "tokenizer")
    dims = TinyDims(hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, vision_depth=1,
                    vision_embed_dim=16)
    tiny_qwen2vl(tok, dims, seed=3).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _localise(args: list[str], ckpt: Path, mixture: Path, runs: Path) -> list[str]:
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if value == "/ckpt/Qwen2-VL-7B-Instruct":
            value = str(ckpt)
        elif value.startswith("/data/") and value.endswith(".yaml"):
            value = str(mixture)
        elif value.startswith("runs/"):
            value = str(runs / value.removeprefix("runs/"))
        out.append(f"{key}={value}" if _ else arg)
    return out


def test_documented_stage_1_and_stage_2_commands_run(synth, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path the page uses lands here, not in the checkout
    ckpt = _qwen2vl_checkpoint(synth, tmp_path / "Qwen2-VL")
    runs = tmp_path / "runs"
    stage1 = _localise(documented_command("# stage 1, one process"), ckpt, synth / "mixture.yaml", runs)
    stage2 = _localise(documented_command("# stage 2, one process"), ckpt, synth / "mixture.yaml", runs)
    assert train_main([*stage1, *SCALE]) == 0
    first = next(a.split("=", 1)[1] for a in stage1 if a.startswith("output_dir="))
    assert (Path(first) / "final" / "model.safetensors").exists()
    assert any(a == f"model.path={Path(first) / 'final'}" for a in stage2), "stage 2 must start from stage 1's final/"
    assert train_main([*stage2, *SCALE]) == 0
    second = Path(next(a.split("=", 1)[1] for a in stage2 if a.startswith("output_dir=")))
    config = (second / "config.yaml").read_text()
    assert "name: sft" in config and json.loads((second / "final" / "config.json").read_text())["model_type"] == "vamba"
