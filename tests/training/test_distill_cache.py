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


def _targets(sample_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(sum(map(ord, sample_id)))
    return torch.randn(3, 4, generator=g), torch.randint(0, 10, (3, 4), generator=g)


def _write_cache(root: str, name: str, peer: str) -> None:
    """One writer process: open the cache, wait until the other writer has opened it too, then write 4 samples in
    2 shards."""
    import time
    from pathlib import Path

    w = TopKCacheWriter(root, top_k=4, vocab_size=10, teacher="t", shard_size=2)
    Path(root, f"ready-{name}").touch()
    while not Path(root, f"ready-{peer}").exists():
        time.sleep(0.01)
    for i in range(4):
        w.add(f"{name}{i}", *_targets(f"{name}{i}"))
    w.close()


def test_two_writers_of_one_cache_lose_no_sample(tmp_path) -> None:
    """Issue 28 item 4: two writers (two `vamba distill-cache` runs, or ranks) both named their first shard
    shard-00000 and replaced each other's index: samples were lost, found later as a KeyError."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vamba.training.distill_cache", "tests.training.test_distill_cache"])
    procs = [ctx.Process(target=_write_cache, args=(str(tmp_path), a, b)) for a, b in (("a", "b"), ("b", "a"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = TopKCache(tmp_path, vocab_size=10)
    assert len(cache) == 8 and len(list(tmp_path.glob("shard-*.safetensors"))) == 4
    for sid in [f"{n}{i}" for n in "ab" for i in range(4)]:
        values, indices = cache[sid]
        want_values, want_indices = _targets(sid)
        torch.testing.assert_close(values, want_values.bfloat16().float())
        assert torch.equal(indices, want_indices)
