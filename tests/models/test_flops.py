"""The model-FLOPs count behind `vamba train`'s mfu: per sample of a real batch layout, the parts a stage trains."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import vamba_config
from vamba.bench.flops import MODES
from vamba.models import VambaForConditionalGeneration
from vamba.models.flops import step_flops, train_flops, trained_parts, vamba_llm_flops, vision_flops

WHOLE = {"text": "full", "video": "full", "vision": "no"}


def _batch(packed: bool) -> dict[str, torch.Tensor]:
    """Two visual items (a 4x6-patch video of 3 temporal patches, a 2x2 image) in docs/batch.md's layout: two rows
    of one sample each, or one packed row of two samples (text 5 + 3 tokens, then 2 pads)."""
    grid = torch.tensor([[3, 4, 6], [1, 2, 2]])
    labels = torch.full((2, 6), -100)
    labels[0, 3:5] = 7  # row 0: targets at 3, 4 -> predicted from positions 2, 3
    labels[1, 2] = 7
    if not packed:
        return {"attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]), "labels": labels,
                "grid_thw": grid, "visual_row": torch.tensor([0, 1]), "visual_seq_idx": torch.tensor([0, 0])}
    row = torch.full((1, 10), -100)
    row[0, 3:5] = 7  # sample 0 (positions 0-4)
    row[0, 7] = 7  # sample 1 (positions 5-7)
    return {"attention_mask": torch.tensor([[1] * 8 + [0, 0]]), "labels": row,
            "text_seq_idx": torch.tensor([[0] * 5 + [1] * 3 + [-1, -1]], dtype=torch.int32),
            "grid_thw": grid, "visual_row": torch.tensor([0, 0]), "visual_seq_idx": torch.tensor([0, 1])}


@pytest.mark.parametrize("packed", [False, True])
def test_step_flops_counts_every_sample_with_its_own_video(packed: bool) -> None:
    config = vamba_config()
    # sample 0: 5 text tokens, 3*4*6/4 = 18 video tokens, 2 positions with a target; sample 1: 3, 1, 1
    forward = vamba_llm_flops(config, 18, 5, 2) + vamba_llm_flops(config, 1, 3, 1)
    video = vamba_llm_flops(config, 18, 0, 0) + vamba_llm_flops(config, 1, 0, 0)
    vision = vision_flops(config.vision_config, 3, (4, 6)) + vision_flops(config.vision_config, 1, (2, 2))
    assert step_flops(config, _batch(packed), WHOLE) == pytest.approx(3 * forward + vision)
    stage1 = {"text": "no", "video": "full", "vision": "no"}
    assert step_flops(config, _batch(packed), stage1) == pytest.approx(2 * forward + video + vision)
    # cross-attention within a sample only: one sample holding all text and video would count more
    merged = vamba_llm_flops(config, 19, 8, 3)
    assert merged > forward


def test_train_flops_matches_the_benchmark_step_kinds() -> None:
    f, v = 10.0, 4.0
    assert train_flops(f, v, MODES["train"]) == 3 * f
    assert train_flops(f, v, MODES["stage1"]) == 2 * f + v
    assert train_flops(f, v, MODES["train_shared"]) == f + 2 * (f - v)
    # adapters: activation gradients, no weight gradients
    assert train_flops(f, v, {"text": "adapter", "video": "adapter"}) == 2 * f
    assert train_flops(f, v, {"text": "no", "video": "no"}) == f


def test_trained_parts_reads_requires_grad_by_module() -> None:
    model = VambaForConditionalGeneration(vamba_config())
    for name, p in model.named_parameters():
        p.requires_grad_(".cross_attn." in name or ".vision_mixer." in name or name.endswith(".alpha"))
    assert trained_parts(model.named_parameters()) == {"text": "no", "video": "full", "vision": "no"}
    for name, p in model.named_parameters():
        p.requires_grad_("visual." not in name or ".merger." in name)
    assert trained_parts(model.named_parameters()) == WHOLE  # the merger is not counted as the tower
    peft = pytest.importorskip("peft")
    for p in model.parameters():
        p.requires_grad_(False)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=r".*\.cross_attn\.q_proj"))
    assert trained_parts(lora.named_parameters()) == {"text": "no", "video": "adapter", "vision": "no"}
