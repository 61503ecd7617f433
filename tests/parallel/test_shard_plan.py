"""The time cuts of context parallelism (vamba.data.shard) and the pieces they make, in one process."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import pack, vamba_config, video_batch
from vamba.data.shard import plan_row, shard_batch
from vamba.models import VambaForConditionalGeneration


def _flatten(plan):
    return [(item, t) for pieces in plan for item, t0, t1 in pieces for t in range(t0, t1)]


@pytest.mark.parametrize("items,size", [([(7, 4)], 2), ([(2, 16), (1, 16), (2, 8), (4, 16)], 4), ([(3, 1)], 8),
                                        ([], 3), ([(5, 2), (1, 50)], 3)])
def test_plan_covers_every_temporal_patch_once_in_time_order(items, size) -> None:
    plan = plan_row(items, size)
    assert len(plan) == size
    assert _flatten(plan) == [(i, t) for i, (n, _) in enumerate(items) for t in range(n)]
    tokens = [sum((t1 - t0) * items[i][1] for i, t0, t1 in pieces) for pieces in plan]
    total = sum(n * u for n, u in items)
    # each cut is the patch boundary nearest its share: no rank is off by more than one patch per cut
    biggest = max((u for _, u in items), default=0)
    assert all(abs(t - total / size) <= 2 * biggest for t in tokens)


def test_shard_batch_pieces_reassemble_the_batch() -> None:
    batch = pack([video_batch([4], [[(3, 4, 4)]], seed=1), video_batch([3], [[]], seed=2),
                  video_batch([5], [[(1, 2, 2), (4, 2, 4)]], seed=3)])
    shards = [shard_batch(batch, r, 3) for r in range(3)]
    for s in shards:
        assert torch.equal(s["input_ids"], batch["input_ids"]) and torch.equal(s["labels"], batch["labels"])
    assert torch.equal(torch.cat([s["pixel_values"] for s in shards]), batch["pixel_values"])
    pieces = [(int(q), int(o), int(g[0])) for s in shards
              for q, o, g in zip(s["visual_seq_idx"], s["visual_t_offset"], s["grid_thw"])]
    # per sample: the pieces' temporal ranges tile its items in order
    assert sum(p[2] for p in pieces) == int(batch["grid_thw"][:, 0].sum())
    assert all(a[0] <= b[0] for a, b in zip(pieces, pieces[1:]))


def test_pieces_with_time_offsets_equal_the_whole_video() -> None:
    """A video given as pieces (grid (t1 - t0, h, w), ``visual_t_offset`` t0) runs exactly as the whole video in one
    process: the vision tower encodes per temporal patch, the 3-D positions continue, the scan runs through."""
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config(cross_attn_use_position_embeddings=True)).double().eval()
    batch = video_batch([7], [[(5, 4, 4)]], seed=4)
    batch["pixel_values"] = batch["pixel_values"].double()
    whole = model(**batch, return_logits=True).logits
    pieces = dict(batch, grid_thw=torch.tensor([[2, 4, 4], [3, 4, 4]]), visual_row=torch.tensor([0, 0]),
                  visual_seq_idx=torch.tensor([0, 0]), visual_t_offset=torch.tensor([0, 2]))
    torch.testing.assert_close(model(**pieces, return_logits=True).logits, whole, rtol=1e-12, atol=1e-12)
    wrong = dict(pieces, visual_t_offset=torch.tensor([0, 0]))  # positions restart: not the same video
    assert not torch.allclose(model(**wrong, return_logits=True).logits, whole, rtol=1e-6, atol=1e-8)
