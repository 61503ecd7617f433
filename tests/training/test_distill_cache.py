from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.conftest import compose_config
from vamba.models.presets import TinyDims
from vamba.training import cache_settings as cs
from vamba.training.config import ConfigError
from vamba.training.distill import distillation_loss, teacher_topk
from vamba.training.distill_cache import TopKCache, TopKCacheWriter

REPO = Path(__file__).resolve().parents[2]


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
    with pytest.raises(ValueError, match="written for other inputs .top_k: folder 4, now 8"):
        TopKCacheWriter(tmp_path, top_k=8, vocab_size=10, teacher="a")
    with pytest.raises(ValueError, match="data.num_frames: cache <not recorded>, this run 8"):
        TopKCacheWriter(tmp_path, top_k=4, vocab_size=10, teacher="a", settings={"data.num_frames": 8})
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


# -- what a cache records, and training's check of it ------------------------------------------------------------

def _tiny_teacher(synth: Path, out: Path) -> Path:
    """A tiny Qwen2-VL checkpoint with the synthetic tokenizer beside it (the teacher and its tokenizer)."""
    from transformers import AutoTokenizer

    from vamba.models.presets import tiny_qwen2vl

    tok = AutoTokenizer.from_pretrained(synth / "tokenizer")
    dims = TinyDims(hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=1, vision_depth=1,
                    vision_embed_dim=16)
    tiny_qwen2vl(tok, dims).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _two_captions(synth: Path, out: Path) -> Path:
    """A mixture of two synthetic video captions (the media stay in the synthetic set)."""
    out.mkdir()
    lines = (synth / "captions.jsonl").read_text().splitlines()[:2]
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (out / "mixture.yaml").write_text(f"sources:\n  - name: caps\n    format: caption\n    path: captions.jsonl\n"
                                      f"    media_root: {synth}\n")
    return out / "mixture.yaml"


def _documented(name: str, teacher: Path, mixture: Path, cache: Path) -> list[str]:
    """The `vamba <name>` command of vamba/training/cli.py's docstring, with this test's paths."""
    import vamba.training.cli

    doc = vamba.training.cli.__doc__.replace("\\\n", " ")
    line = next(x.strip() for x in doc.splitlines() if x.strip().startswith(f"vamba {name} ")
                and "stage.distill.cache_dir=" in x)
    line = line.replace("/ckpt/Qwen2-VL-7B-Instruct", str(teacher)).replace("/data/pt.yaml", str(mixture))
    return shlex.split(line.replace("cache/pt", str(cache)))[2:]


def test_documented_command_writes_the_cache_it_names_and_training_checks_its_settings(synth, tmp_path) -> None:
    teacher = _tiny_teacher(synth, tmp_path / "teacher")
    mixture = _two_captions(synth, tmp_path / "data")
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "vamba.cli", "distill-cache",
                           *_documented("distill-cache", teacher, mixture, cache)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # before: it printed runs/train/<date> (a folder holding only .hydra), and this command failed
    assert f"2 samples cached in {cache}" in proc.stdout
    names = {p.name for p in cache.iterdir()}
    assert {".hydra", "meta.json", "index.json"} <= names and len({n for n in names if n.startswith("shard-")}) == 1
    assert names <= {".hydra", "meta.json", "index.json", ".index.lock"} | {n for n in names if n.startswith("shard-")}
    assert not (tmp_path / "runs").exists()
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["settings"]["data.num_frames"] == 16 and meta["settings"]["data.max_pixels"] == 602112
    assert meta["settings"]["teacher.fingerprint"] == cs.teacher_fingerprint(teacher)

    # the documented training command (paper_pretrain, cache source) fits it; other frames or pixels do not
    from vamba.training.build import load_tokenizer

    train_args = _documented("train", teacher, mixture, cache)
    for extra, error in [([], None), (["data.num_frames=8"], "data.num_frames: cache 16, this run 8"),
                         (["data.max_pixels=50176"], "data.max_pixels: cache 602112, this run 50176")]:
        cfg = compose_config(*train_args, *extra)
        wanted = cs.cache_settings(cfg, load_tokenizer(cfg), cfg.stage.distill.teacher)
        if error is None:
            assert cs.check_cache_settings(meta, wanted, cache) == []
        else:
            with pytest.raises(ConfigError, match=f"stage.distill.cache_dir='{cache}' does not fit this run: {error}"):
                cs.check_cache_settings(meta, wanted, cache)


def test_training_refuses_a_cache_of_other_frames_and_an_unchecked_old_one(train_overrides, tmp_path) -> None:
    from transformers import AutoTokenizer

    from vamba.training.run import open_teacher_cache, train

    overrides = [*train_overrides, "stage.distill.weight=1", "stage.distill.source=cache",
                 f"stage.distill.cache_dir={tmp_path / 'cache'}", "optim.max_steps=1"]
    cfg = compose_config(*overrides)  # data.num_frames=4
    tok = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    written = cs.cache_settings(compose_config(*overrides, "data.num_frames=8"), tok, None)
    TopKCacheWriter(tmp_path / "cache", top_k=64, vocab_size=len(tok), teacher="t", settings=written).close()
    with pytest.raises(ConfigError, match="data.num_frames: cache 8, this run 4"):
        train(cfg)  # before: trained on the 8-frame teacher's logits, rc 0, no warning
    assert not Path(cfg.output_dir).exists()  # refused before the run directory is made, through the CLI too
    from vamba.training.cli import main as train_main

    with pytest.raises(SystemExit) as e:
        train_main(overrides)
    assert e.value.code == 2 and not Path(cfg.output_dir).exists()
    # a cache from before settings were recorded: an error saying how to regenerate, or the explicit opt-out
    (tmp_path / "cache" / "meta.json").write_text(json.dumps({"format": 1, "top_k": 64, "vocab_size": len(tok),
                                                              "teacher": "t"}))
    with pytest.raises(ConfigError, match="written before caches recorded .*vamba distill-cache.*check_cache=false"):
        train(cfg)
    unchecked = compose_config(*overrides, "stage.distill.check_cache=false")
    assert len(open_teacher_cache(unchecked, tok)) == 0


def test_fingerprints_follow_contents_not_paths(synth, tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    teacher = _tiny_teacher(synth, tmp_path / "teacher")
    copy = Path(shutil.copytree(teacher, tmp_path / "moved"))
    assert cs.teacher_fingerprint(copy) == cs.teacher_fingerprint(teacher)
    weights = load_file(copy / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = weights[name] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert cs.teacher_fingerprint(copy) != cs.teacher_fingerprint(teacher)
    monkeypatch.setattr(cs, "WHOLE_FILE_BYTES", 1024)  # large files: sampled blocks, the last one included
    monkeypatch.setattr(cs, "BLOCK", 256)
    assert cs.teacher_fingerprint(copy) != cs.teacher_fingerprint(teacher)
    with pytest.raises(ConfigError, match="stage.distill.teacher=.*no config.json"):
        cs.teacher_fingerprint(tmp_path)

    tok = AutoTokenizer.from_pretrained(synth / "tokenizer")
    assert cs.tokenizer_fingerprint(AutoTokenizer.from_pretrained(teacher)) == cs.tokenizer_fingerprint(tok)
    tok.add_tokens(["<|extra|>"])
    assert cs.tokenizer_fingerprint(tok) != cs.tokenizer_fingerprint(AutoTokenizer.from_pretrained(teacher))

    mixture = _two_captions(synth, tmp_path / "data")
    before = cs.mixture_fingerprint(mixture)
    records = (mixture.parent / "captions.jsonl").read_text()
    (mixture.parent / "captions.jsonl").write_text(records.replace("Shapes", "Forms", 1))
    assert cs.mixture_fingerprint(mixture) != before


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
