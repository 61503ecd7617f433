from __future__ import annotations

import math

import pytest
import torch

from vamba.training.distill import distillation_loss, supervised_positions, teacher_topk, topk_kl


def _hand_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_topk_kl_equals_hand_computation() -> None:
    # one position, vocabulary 5, teacher top-2 = tokens 3 and 1
    student = torch.tensor([[0.0, 1.0, 2.0, 0.5, -1.0]])
    values = torch.tensor([[2.0, 1.0]])
    indices = torch.tensor([[3, 1]])
    p_t = [math.exp(2.0) / (math.exp(2.0) + math.exp(1.0)), math.exp(1.0) / (math.exp(2.0) + math.exp(1.0))]
    p_s = [math.exp(0.5) / (math.exp(0.5) + math.exp(1.0)), math.exp(1.0) / (math.exp(0.5) + math.exp(1.0))]
    assert topk_kl(student, values, indices).item() == pytest.approx(_hand_kl(p_t, p_s), rel=1e-6)


def test_full_vocab_kl_matches_torch_kl_div_and_is_zero_for_identical() -> None:
    s, t = torch.randn(7, 11), torch.randn(7, 11)
    ref = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="sum") / 7
    assert distillation_loss(s, t).item() == pytest.approx(ref.item(), rel=1e-5)
    assert distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_online_topk_equals_cached_topk() -> None:
    """The cached-teacher path and the online path give the same loss (reproducible distillation)."""
    s, t = torch.randn(9, 50), torch.randn(9, 50)
    cached = teacher_topk(t.to(torch.bfloat16), 8)
    online = distillation_loss(s, t.to(torch.bfloat16), top_k=8)
    assert distillation_loss(s, cached).item() == pytest.approx(online.item(), rel=1e-6)


def test_gradient_flows_and_empty_selection_is_zero() -> None:
    s = torch.randn(4, 10, requires_grad=True)
    distillation_loss(s, torch.randn(4, 10), top_k=3).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    empty = torch.zeros(0, 10, requires_grad=True)
    loss = distillation_loss(empty, torch.zeros(0, 10))
    loss.backward()
    assert loss.item() == 0.0


def test_supervised_positions_shift() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, -100]])
    assert supervised_positions(labels).tolist() == [[False, True, True, False, False]]
