"""Context parallelism in the data pipeline: each rank decodes only its temporal patches
(``ProcessingConfig.shard``) and gets exactly its cut of the fully decoded batch (vamba.data.shard), from real mp4
and png files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vamba.data.collate import Collator
from vamba.data.dataset import PackedDataset, ProcessingConfig, VambaDataset
from vamba.data.mixture import Mixture
from vamba.data.packing import plan_rows
from vamba.data.sampling import FrameSampling
from vamba.data.shard import shard_batch


def _equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("mode,size", [("uniform", 2), ("random", 3)])
def test_each_rank_decodes_exactly_its_cut(synth_dir: Path, tokenizer, mode: str, size: int) -> None:
    mixture = Mixture.from_yaml(synth_dir / "mixture.yaml")
    # odd: last frame dropped
    whole = VambaDataset(mixture, tokenizer, ProcessingConfig(sampling=FrameSampling(mode, 7)))
    collate = Collator(tokenizer.pad_token_id)
    indices = list(range(5))
    full = collate([whole[i] for i in indices])
    seen_frames = 0
    for rank in range(size):
        local = VambaDataset(mixture, tokenizer, replace(whole.config, shard=(rank, size)))
        batch = collate([local[i] for i in indices])
        _equal(batch, shard_batch(full, rank, size))
        seen_frames += int(batch["grid_thw"][:, 0].sum())
    assert seen_frames == int(full["grid_thw"][:, 0].sum())


def test_packed_rows_are_cut_as_one_sequence(synth_dir: Path, tokenizer) -> None:
    mixture = Mixture.from_yaml(synth_dir / "mixture.yaml")
    whole = VambaDataset(mixture, tokenizer, ProcessingConfig(sampling=FrameSampling("uniform", 6)))
    rows = plan_rows(whole.measure(), text_budget=400, video_budget=96, seed=0).rows[:2]
    collate = Collator(tokenizer.pad_token_id)
    full = collate([PackedDataset(whole, rows)[r] for r in range(len(rows))])
    for rank in range(2):
        local = VambaDataset(mixture, tokenizer, replace(whole.config, shard=(rank, 2)))
        _equal(collate([PackedDataset(local, rows)[r] for r in range(len(rows))]), shard_batch(full, rank, 2))
