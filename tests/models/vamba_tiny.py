"""Tiny real models and batches for the VAMBA model tests (transformers' own Qwen2-VL classes, no mocks).

The model is the package's tiny preset (``vamba.models.presets``) at smaller sizes: a 96-token vocabulary, one
vision block, and a Mamba-2 chunk of 4 tokens so that short test sequences cross chunk boundaries."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vamba.models import VambaConfig
from vamba.models.presets import TinyDims, tiny_mamba, tiny_text_vision, tiny_vamba_config

VOCAB = 96
DIMS = TinyDims(intermediate_size=96, vision_depth=1, mamba_d_state=8, mamba_chunk_size=4)
HIDDEN = DIMS.hidden_size
MAX_POSITIONS = 256
TEXT, VISION = tiny_text_vision(VOCAB, DIMS, max_position_embeddings=MAX_POSITIONS)
MAMBA = dict(tiny_mamba(DIMS), expand=2)
PATCH_DIM = 3 * 2 * 14 * 14


def vamba_config(vocab_size: int = VOCAB, ids: dict[str, int] | None = None, **overrides) -> VambaConfig:
    """The tests' tiny VAMBA (``vocab_size``, bos/eos/pad ``ids``: a tokenizer's; ``mamba``: Mamba-2 keys)."""
    mamba = {"expand": 2, **overrides.pop("mamba", {})}
    return tiny_vamba_config(vocab_size, DIMS, ids, max_position_embeddings=MAX_POSITIONS, mamba=mamba, **overrides)


def qwen2_vl_config() -> Qwen2VLConfig:
    return Qwen2VLConfig(text_config=dict(TEXT), vision_config=dict(VISION))


def qwen2_vl_model() -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(1)
    model = Qwen2VLForConditionalGeneration(qwen2_vl_config()).eval()
    with torch.no_grad():  # biases are zero-initialised: make them count so a missed copy shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def save_qwen2_vl_4x(model: Qwen2VLForConditionalGeneration, path: Path) -> Path:
    """Write ``model`` as a transformers 4.x Qwen2-VL checkpoint: flat text keys in config.json,
    ``rope_scaling: {type: mrope}``, weights under ``model.layers.*`` / ``visual.*``, two shards + index."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        elif key.startswith("model.visual."):
            key = "visual." + key[len("model.visual."):]
        tensors[key] = value.contiguous().clone()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(path / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in keys})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    text = {k: v for k, v in TEXT.items() if k != "rope_parameters"}
    config = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", **text,
              "rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
              "vision_config": {**VISION, "model_type": "qwen2_vl", "in_chans": 3},
              "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": False,
              "torch_dtype": "float32", "transformers_version": "4.45.0"}
    (path / "config.json").write_text(json.dumps(config))
    return path


def save_qwen2_vl_5x(model: Qwen2VLForConditionalGeneration, path: Path) -> Path:
    """Write ``model`` with the in-memory transformers 5.x key layout (``model.language_model.*``,
    ``model.visual.*``; what transformers 4.52-4.57 wrote) and its nested 5.x config.json, one file."""
    model.config.save_pretrained(path)
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    return path


def video_batch(lengths: list[int], grids: list[list[tuple[int, int, int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Unpacked, right-padded batch: row b has ``lengths[b]`` text tokens and the visual items ``grids[b]``."""
    g = torch.Generator().manual_seed(seed)
    b, n = len(lengths), max(lengths)
    ids = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.long)
    for i, length in enumerate(lengths):
        ids[i, :length] = torch.randint(3, VOCAB, (length,), generator=g)
        mask[i, :length] = 1
    labels = ids.masked_fill(mask == 0, -100)
    items = [(row, grid) for row, row_grids in enumerate(grids) for grid in row_grids]
    grid_thw = torch.tensor([grid for _, grid in items], dtype=torch.long).reshape(-1, 3)
    pixels = torch.randn(int(grid_thw.prod(-1).sum()), PATCH_DIM, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels,
            "grid_thw": grid_thw, "visual_row": torch.tensor([row for row, _ in items], dtype=torch.long),
            "visual_seq_idx": torch.zeros(len(items), dtype=torch.long)}


def pack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pack single-row, unpadded samples into one row (docs/batch.md packed layout)."""
    ids = torch.cat([s["input_ids"][0] for s in samples])[None]
    n_items = [s["grid_thw"].shape[0] for s in samples]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.cat([s["labels"][0] for s in samples])[None],
        "position_ids": torch.cat([torch.arange(s["input_ids"].shape[1]) for s in samples])[None],
        "text_seq_idx": torch.cat([torch.full((s["input_ids"].shape[1],), i, dtype=torch.int32)
                                   for i, s in enumerate(samples)])[None],
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "grid_thw": torch.cat([s["grid_thw"] for s in samples]),
        "visual_row": torch.zeros(sum(n_items), dtype=torch.long),
        "visual_seq_idx": torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(n_items)]),
    }


def row(batch: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Row ``b`` of an unpacked batch as its own unpadded single-row batch."""
    n = int(batch["attention_mask"][b].sum())
    items = batch["visual_row"] == b
    sizes = batch["grid_thw"].prod(-1)
    start = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    pixels = torch.cat([batch["pixel_values"][start[i]:start[i + 1]] for i in items.nonzero().flatten().tolist()]
                       or [batch["pixel_values"][:0]])
    return {"input_ids": batch["input_ids"][b:b + 1, :n], "attention_mask": batch["attention_mask"][b:b + 1, :n],
            "labels": batch["labels"][b:b + 1, :n], "pixel_values": pixels, "grid_thw": batch["grid_thw"][items],
            "visual_row": torch.zeros(int(items.sum()), dtype=torch.long),
            "visual_seq_idx": torch.zeros(int(items.sum()), dtype=torch.long)}


def segments(rows: list[list[int]], n: int) -> torch.Tensor:
    """Segment ids [len(rows), n]: per row a list of segment lengths (ids 0, 1, ...; a length-0 segment is
    absent); the rest of the row is -1."""
    seg = torch.full((len(rows), n), -1, dtype=torch.long)
    for b, lengths in enumerate(rows):
        pos = 0
        for s, length in enumerate(lengths):
            seg[b, pos:pos + length] = s
            pos += length
    return seg
