"""Chunked cross-entropy against full-logits cross-entropy, forward and backward."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vamba.models.loss import chunked_lm_loss, lm_loss_ref


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
@pytest.mark.parametrize("packed", [False, True])
def test_chunked_loss_matches_reference(chunk_size, packed):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=False).double()
    hidden = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :3] = -100
    labels[1, 7:] = -100
    segments = torch.tensor([[0] * 5 + [1] * 4, [0] * 9]) if packed else None
    loss = chunked_lm_loss(hidden, labels, head, chunk_size, segments)
    ref = lm_loss_ref(head(hidden), labels, segments)
    torch.testing.assert_close(loss, ref)
    g, gw = torch.autograd.grad(loss, (hidden, head.weight))
    rg, rgw = torch.autograd.grad(ref, (hidden, head.weight))
    torch.testing.assert_close(g, rg)
    torch.testing.assert_close(gw, rgw)


def test_packed_boundary_target_is_dropped():
    head = nn.Linear(4, 7, bias=False)
    hidden = torch.randn(1, 4, 4)
    labels = torch.tensor([[1, 2, 3, 4]])
    together = chunked_lm_loss(hidden, labels, head, 8)
    split = chunked_lm_loss(hidden, labels, head, 8, segments=torch.tensor([[0, 0, 1, 1]]))
    logits = head(hidden)[0].float()
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([2, 4]))  # 2 -> 3 crosses samples
    torch.testing.assert_close(split, expected)
    assert not torch.isclose(together, split)


def test_no_labelled_token_gives_a_connected_zero_and_num_items_scales():
    head = nn.Linear(4, 7, bias=False)
    hidden = torch.randn(1, 4, 4, requires_grad=True)
    loss = chunked_lm_loss(hidden, torch.full((1, 4), -100), head, 8)
    loss.backward()
    assert loss.item() == 0 and hidden.grad is not None
    labels = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(chunked_lm_loss(hidden, labels, head, 2, num_items_in_batch=6),
                               chunked_lm_loss(hidden, labels, head, 2) * 3 / 6)
