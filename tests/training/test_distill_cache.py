from __future__ import annotations

import pytest
import torch

from vamba.training.distill import distillation_loss, teacher_topk
from vamba.training.distill_cache import TopKCache, TopKCacheWriter


def test_round_trip_resume_and_loss_equality(tmp_path) -> None:
    teacher = {f"s{i}": torch.randn(3 + i, 40) for i in range(5)}
    w = TopKCacheWriter(tmp_path, top_k=6, vocab_size=40, teacher="tiny", shard_size=2)
    for sid in ["s0", "s1", "s2"]:
        w.add(sid, *teacher_topk(teacher[sid], 6))
    # simulated crash: s2 pending, never flushed -> lost, but s0/s1 are safe on disk
    w2 = TopKCacheWriter(tmp_path, top_k=6, vocab_size=40, teacher="tiny", shard_size=2)
    assert "s0" in w2 and "s1" in w2 and "s2" not in w2
    for sid in teacher:
        w2.add(sid, *teacher_topk(teacher[sid], 6))
    w2.close()
    cache = TopKCache(tmp_path, vocab_size=40)
    assert len(cache) == 5 and len(list(tmp_path.glob("shard-*.safetensors"))) == 3
    student = torch.randn(7, 40)
    # the cache stores bf16 values: the loss equals the online teacher's up to bf16 rounding
    online = distillation_loss(student, teacher["s4"], top_k=6)
    assert distillation_loss(student, cache["s4"]).item() == pytest.approx(online.item(), rel=2e-2)


def test_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="distill-cache"):
        TopKCache(tmp_path / "none")
    TopKCacheWriter(tmp_path, top_k=4, vocab_size=10, teacher="a").close()
    with pytest.raises(ValueError, match="not"):
        TopKCacheWriter(tmp_path, top_k=8, vocab_size=10, teacher="a")
    with pytest.raises(ValueError, match="vocabulary"):
        TopKCache(tmp_path, vocab_size=11)
    with pytest.raises(KeyError):
        TopKCache(tmp_path)["missing"]


def test_truncated_shard_is_an_error_naming_it(tmp_path) -> None:
    w = TopKCacheWriter(tmp_path, top_k=4, vocab_size=10, teacher="a")
    w.add("s0", *teacher_topk(torch.randn(3, 10), 4))
    w.close()
    shard = next(tmp_path.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(ValueError, match=f"{shard} is truncated"):
        TopKCache(tmp_path)["s0"]
