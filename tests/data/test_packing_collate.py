from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vamba.data.collate import Collator
from vamba.data.dataset import PackedDataset, ProcessingConfig, VambaDataset
from vamba.data.formats import Source
from vamba.data.mixture import Mixture
from vamba.data.packing import plan_rows
from vamba.data.sampling import FrameSampling

CONTRACT_KEYS = {"input_ids", "attention_mask", "labels", "position_ids", "pixel_values", "grid_thw", "visual_row",
                 "visual_seq_idx"}


def test_plan_respects_both_budgets_and_places_every_sample_once() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = [(int(t), int(v)) for t, v in zip(torch.randint(10, 60, (200,), generator=g),
                                                torch.randint(0, 50, (200,), generator=g))]
    lengths[5], lengths[9] = None, (500, 0)
    plan = plan_rows(lengths, text_budget=124, video_budget=120, seed=3)
    placed = sorted(i for row in plan.rows for i in row)
    assert placed == sorted(set(range(200)) - {5, 9})
    assert plan.missing == [5] and plan.unpackable == [9]
    for row, t, v in zip(plan.rows, plan.text_tokens, plan.video_tokens):
        assert t == sum(lengths[i][0] for i in row) <= 124 and v == sum(lengths[i][1] for i in row) <= 120
    assert plan.fill(124, 120)["text"] > 0.85  # greedy first-fit packs tightly
    assert plan_rows(lengths, 124, 120, seed=3).rows == plan.rows
    assert plan_rows(lengths, 124, 120, seed=4).rows != plan.rows


def test_plan_rejects_bad_budgets() -> None:
    with pytest.raises(ValueError, match="budgets must be positive"):
        plan_rows([(1, 1)], 0, 10)


def test_padded_batch_follows_contract(synth_dir: Path, tokenizer) -> None:
    ds = VambaDataset(Mixture.from_yaml(synth_dir / "mixture.yaml"), tokenizer,
                      ProcessingConfig(sampling=FrameSampling("uniform", 6)))
    samples = [ds[i] for i in range(4)]
    batch = Collator(tokenizer.pad_token_id)(samples)
    assert set(batch) == CONTRACT_KEYS  # no text_seq_idx for unpacked batches
    n = max(s.num_text_tokens for s in samples)
    assert batch["input_ids"].shape == (4, n) and batch["labels"].shape == (4, n)
    for b, s in enumerate(samples):
        k = s.num_text_tokens
        assert torch.equal(batch["input_ids"][b, :k], s.input_ids) and torch.equal(batch["labels"][b, :k], s.labels)
        assert batch["attention_mask"][b].sum() == k and torch.all(batch["labels"][b, k:] == -100)
        assert torch.all(batch["input_ids"][b, k:] == tokenizer.pad_token_id)
        assert torch.equal(batch["position_ids"][b, :k], torch.arange(k))
    V = sum(len(s.grid_thw) for s in samples)
    assert batch["grid_thw"].shape == (V, 3) and batch["visual_row"].tolist() == [
        b for b, s in enumerate(samples) for _ in range(len(s.grid_thw))]
    assert torch.all(batch["visual_seq_idx"] == 0)
    assert batch["pixel_values"].shape == (int(batch["grid_thw"].prod(-1).sum()), 1176)


def test_text_only_batch_has_empty_visual_tensors(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "t.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi"},
                                                                    {"from": "gpt", "value": "Hello."}]}]))
    ds = VambaDataset(Source("t", "llava", tmp_path / "t.json"), tokenizer)
    batch = Collator(tokenizer.pad_token_id)([ds[0], ds[0]])
    assert batch["pixel_values"].shape == (0, 1176) and batch["grid_thw"].shape == (0, 3)
    assert batch["visual_row"].shape == (0,) and batch["grid_thw"].dtype == torch.long


def test_packed_rows_through_a_dataloader(synth_dir: Path, tokenizer, tmp_path: Path) -> None:
    # Forked workers after the parent has decoded (measure): every read in them runs under the decode timeout.
    cfg = ProcessingConfig(sampling=FrameSampling("uniform", 8), skip_log=str(tmp_path / "skips.jsonl"))
    ds = VambaDataset(Mixture.from_yaml(synth_dir / "mixture.yaml"), tokenizer, cfg)
    lengths = ds.measure()
    plan = plan_rows(lengths, text_budget=300, video_budget=64, seed=0)
    assert not plan.missing and not plan.unpackable
    packed = PackedDataset(ds, plan.rows)
    loader = torch.utils.data.DataLoader(packed, batch_size=2, num_workers=2,
                                         collate_fn=Collator(tokenizer.pad_token_id))
    seen = 0
    for n_batch, batch in enumerate(loader):
        assert set(batch) == CONTRACT_KEYS | {"text_seq_idx"} and batch["text_seq_idx"].dtype == torch.int32
        for b in range(batch["input_ids"].shape[0]):
            row = plan.rows[2 * n_batch + b]
            mask = batch["attention_mask"][b].bool()
            seq = batch["text_seq_idx"][b]
            assert int(mask.sum()) == sum(lengths[i][0] for i in row) <= 300
            assert torch.all(seq[~mask] == -1) and seq[mask].unique().tolist() == list(range(len(row)))
            for s, i in enumerate(row):  # positions restart at 0 for each packed sample
                pos = batch["position_ids"][b][seq == s]
                assert torch.equal(pos, torch.arange(lengths[i][0]))
            items = batch["visual_row"] == b
            tokens = batch["grid_thw"][items].prod(-1) // 4
            assert int(tokens.sum()) == sum(lengths[i][1] for i in row) <= 64
            assert batch["visual_seq_idx"][items].tolist() == sorted(batch["visual_seq_idx"][items].tolist())
        seen += sum(len(plan.rows[2 * n_batch + b]) for b in range(batch["input_ids"].shape[0]))
    assert seen == len(ds)
    assert ds.skips.summary() == {}


def test_dataset_pickles_for_spawned_workers(synth_dir: Path, tokenizer) -> None:
    import pickle

    ds = VambaDataset(Mixture.from_yaml(synth_dir / "mixture.yaml"), tokenizer,
                      ProcessingConfig(sampling=FrameSampling("uniform", 4)))
    copy = pickle.loads(pickle.dumps(ds))
    a, b = ds[3], copy[3]
    assert a.key == b.key and torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)


def test_skips_of_worker_processes_are_summed(tmp_path: Path, synth_dir: Path, tokenizer) -> None:
    records = [{"video": str(synth_dir / "videos" / f"video_0000{i}.mp4"), "caption": "ok"} for i in range(4)]
    records += [{"video": f"missing{i}.mp4", "caption": "gone"} for i in range(4)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = ProcessingConfig(sampling=FrameSampling("uniform", 4), skip_log=str(tmp_path / "skips.jsonl"))
    ds = VambaDataset(Source("mixed", "caption", tmp_path / "a.jsonl", confine_media=False), tokenizer, cfg)
    rows = [[0, 4], [1, 5], [2, 6], [3, 7]]
    loader = torch.utils.data.DataLoader(PackedDataset(ds, rows), batch_size=1, num_workers=2,
                                         collate_fn=Collator(tokenizer.pad_token_id))
    assert all(int(b["text_seq_idx"].max()) == 0 for b in loader)  # the bad half of every row is dropped
    assert ds.skips.counts == {}  # the workers counted, not this process
    assert ds.skips.summary() == {"VideoDecodeError": 4}
    assert len({r["pid"] for r in map(json.loads, (tmp_path / "skips.jsonl").read_text().splitlines())}) == 2


def test_the_docs_quick_start_runs_as_printed(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """docs/data.md's Python quick start, as printed, in a folder where `vamba data synth out=data/synthetic` (the
    block above it) has run; its `...` (the user's loop) takes one packed row."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    code = re.search(r"## Quick start.*?```python\n(.+?)\n```", page, flags=re.S).group(1)
    assert "\n...\n" in code, "docs/data.md's quick start no longer has its `...` line: update this test"
    code = code.replace("\n...\n", "\nrow = next(iter(loader))\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic").symlink_to(synth_dir)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/data.md", "exec"), scope)
    assert scope["row"]["input_ids"].shape[0] == 1 and scope["row"]["pixel_values"].shape[0] > 0
    assert capsys.readouterr().out.strip() == "no samples skipped"
