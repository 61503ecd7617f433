"""The decoding benchmark (vamba/bench/answer.py) at the tiny scale on the CPU: every path decodes the same tokens,
the floor's bytes are what one decoding step reads, the JSON carries its provenance."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vamba.bench.answer import main, random_cache, text_path_bytes
from vamba.bench.build import build, vamba_config
from vamba.models import VambaForConditionalGeneration


def test_text_path_bytes_are_the_weights_a_decoding_step_reads() -> None:
    model = build(VambaForConditionalGeneration, vamba_config("tiny", "reference"), torch.device("cpu"), torch.float32)
    read = [model.lm_head.weight, model.model.norm.weight]
    for layer in model.model.layers:
        read += [*layer.self_attn.parameters(), *layer.mlp.parameters(), layer.cross_attn.q_proj.weight,
                 layer.cross_attn.o_proj.weight, layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                 layer.alpha]
        read += [p for p in (layer.cross_attn.q_proj.bias, layer.cross_attn.o_proj.bias) if p is not None]
    assert text_path_bytes(model) == 4 * sum(p.numel() for p in {id(p): p for p in read}.values())
    cache = random_cache(model, 10, torch.device("cpu"), torch.float32)
    assert len(cache) == 2 and cache.keys[0].shape == (1, 2, 10, 16) and cache.segments.shape == (1, 10)


def test_the_sweep_writes_every_path_beside_the_floor(tmp_path: Path) -> None:
    assert main(["device=cpu", "scale=tiny", "num_frames=[4]", "answer_tokens=4", "reps=1", "question_tokens=8",
                 f"out={tmp_path}"]) == 0
    result = json.loads((tmp_path / "answer_decode_cpu.json").read_text())
    assert result["environment"] and "code_commit" in result and result["copy_gbps"] > 0
    rows = result["rows"]
    assert [(r["path"], r["status"]) for r in rows] == [("generate", "ok"), ("generate_split", "ok"), ("static", "ok"),
                                                        ("graph", "skipped: CUDA graphs need CUDA")]
    weights, m = result["text_path_weight_bytes"], 2 * 299  # 640x360: 299 tokens per frame pair
    cache = 2 * 2 * m * 2 * 16 * 4  # K and V, 2 layers, 2 key/value heads of 16, float32
    for r in rows:
        assert r["video_tokens"] == m and r["bytes_per_token"] == weights + cache + 2 * 2 * 2 * 16 * 4 * (8 + 2)
        assert abs(r["floor_tokens_per_s"] / (result["copy_gbps"] * 1e9 / r["bytes_per_token"]) - 1) < 2e-3
    for r in rows[:3]:  # float32 on the CPU: the paths give the same tokens
        assert r["same_tokens_as_first_path"] and r["tokens_per_s"] > 0 and r["replies"] == 1
