from __future__ import annotations

import pytest
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vamba.data.teacher_view import build_teacher_view
from vamba.training.teacher import teacher_logits_at

START, END, VPAD, PAD = 62, 63, 61, 0


def _teacher() -> Qwen2VLForConditionalGeneration:
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2],
                                                          "rope_theta": 10000.0}),
        vision_config=dict(depth=1, embed_dim=16, num_heads=2, hidden_size=32, mlp_ratio=2, spatial_merge_size=2,
                           temporal_patch_size=2, patch_size=14),
        image_token_id=60, video_token_id=VPAD, vision_start_token_id=START, vision_end_token_id=END)
    return Qwen2VLForConditionalGeneration(cfg).eval()


def _reference_logits(teacher, text: list[int], grids: list[list[int]], pixels: torch.Tensor) -> torch.Tensor:
    """Teacher logits for one sample written directly in Qwen2-VL's own format (pads inline)."""
    ids, k = [], 0
    for t in text:
        ids.append(t)
        if t == START:
            ids += [VPAD] * (torch.tensor(grids[k]).prod().item() // 4)
            k += 1
    ids_t = torch.tensor([ids])
    out = teacher(input_ids=ids_t, mm_token_type_ids=(ids_t == VPAD).int() * 2,
                  pixel_values_videos=pixels, video_grid_thw=torch.tensor(grids))
    return out.logits[0, (ids_t[0] != VPAD)]


def test_packed_and_padded_views_match_qwen2vl_on_each_sample() -> None:
    teacher = _teacher()
    a_text, a_grid = [5, START, END, 7, 8, 9], [[2, 4, 4]]
    b_text, b_grid = [10, 11, START, END, 12], [[1, 4, 8]]
    c_text = [13, 14, 15]  # text only
    pa, pb = torch.randn(32, 1176), torch.randn(32, 1176)
    refs = [_reference_logits(teacher, a_text, a_grid, pa), _reference_logits(teacher, b_text, b_grid, pb),
            teacher(input_ids=torch.tensor([c_text])).logits[0]]

    # packed: row 0 holds samples a and b, row 1 holds c (right padded)
    row0 = a_text + b_text
    row1 = c_text + [PAD] * (len(row0) - len(c_text))
    batch = {
        "input_ids": torch.tensor([row0, row1]),
        "attention_mask": torch.tensor([[1] * len(row0), [1] * 3 + [0] * (len(row0) - 3)]),
        "text_seq_idx": torch.tensor([[0] * 6 + [1] * 5, [0] * 3 + [-1] * 8], dtype=torch.int32),
        "pixel_values": torch.cat([pa, pb]), "grid_thw": torch.tensor(a_grid + b_grid),
        "visual_row": torch.tensor([0, 0]), "visual_seq_idx": torch.tensor([0, 1]),
    }
    view = build_teacher_view(batch, vision_start_id=START, video_pad_id=VPAD, pad_id=PAD)
    assert view.inputs["input_ids"].shape[0] == 3 and (view.inputs["input_ids"] == VPAD).sum() == 8 + 8
    positions = torch.tensor([[0, c] for c in range(11)] + [[1, c] for c in range(3)])
    got = teacher_logits_at(teacher, view, positions)
    want = torch.cat([refs[0], refs[1], refs[2]])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_marker_and_item_counts_must_agree() -> None:
    batch = {"input_ids": torch.tensor([[5, START, END]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with pytest.raises(ValueError, match="more <\\|vision_start\\|> markers"):
        build_teacher_view(batch, vision_start_id=START, video_pad_id=VPAD, pad_id=PAD)


def test_truncated_teacher_weights_are_an_error_naming_the_file(tmp_path) -> None:
    from vamba.training.build import load_teacher

    _teacher().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights} is truncated"):
        load_teacher(str(tmp_path))
