"""On-disk cache of teacher top-k logits, so distillation runs without the teacher in memory.

Layout of a cache directory::

    meta.json                     {"format": 2, "top_k": K, "vocab_size": V, "teacher": "<path>",
                                   "settings": {what the logits depend on}, "written_with": {...}}
    index.json                    {sample_id: shard file name}
    shard-r<rank>-<random>.safetensors   tensors "<sample_id>/values" [T_i, K] (bf16) and "<sample_id>/indices"
                                  [T_i, K] (int32)

T_i is the number of supervised positions of sample i (``distill.supervised_positions``), in order.
``settings`` (``vamba.training.cache_settings``): teacher and data fingerprints, frames, pixels, top_k; training
compares them with its own and refuses a cache written for other inputs. Format 1 caches (before settings were
recorded) read the same but cannot be checked.
Writing is resumable and loss-free: every shard is written to a temporary name, flushed to disk and renamed, then
``index.json`` is replaced atomically; a restarted writer skips the ids already in the index. Several writers (two
``vamba distill-cache`` runs, or ranks) may write one cache at once: shard names are unique per writer and per
flush (rank + a random part; a count of the shards a writer had seen gave two writers the same name, and the second
rename replaced the first's samples), and each writer merges its entries into the index under a lock
(``.index.lock``) instead of replacing the index with its own view.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from vamba.training.cache_settings import cache_settings, differences
from vamba.training.config import ConfigError
from vamba.utils.io import atomic_write_json, fsync_dir, safetensors_header
from vamba.utils.locks import waiting_lock

FORMAT = 2
READABLE_FORMATS = (1, 2)  # same layout; 1 lacks ``settings``


class TopKCacheWriter:
    """Append teacher top-k per sample; flush a shard every ``shard_size`` samples (and on ``close``)."""

    def __init__(self, root: str | Path, *, top_k: int, vocab_size: int, teacher: str,
                 settings: dict[str, Any] | None = None, written_with: dict[str, Any] | None = None,
                 shard_size: int = 256, shard_prefix: str = "shard") -> None:
        """``settings``: what the logits depend on (``cache_settings``); a folder holding a cache of other
        settings is an error naming them (resuming must not mix two caches). ``written_with``: provenance
        (teacher dtype, commit, date), recorded and never compared."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "top_k": top_k, "vocab_size": vocab_size, "teacher": teacher,
                "settings": dict(settings or {})}
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            compared = ("format", "top_k", "vocab_size", "settings")
            found = [f"{k}: folder {old.get(k)!r}, now {meta[k]!r}" for k in compared[:3] if old.get(k) != meta[k]]
            found += differences(old.get("settings", {}), meta["settings"])
            if found:
                raise ConfigError(f"{self.root} holds a teacher cache written for other inputs ({'; '.join(found)}); "
                                 f"use another stage.distill.cache_dir")
        else:
            atomic_write_json(meta_path, {**meta, "written_with": dict(written_with or {})})
        self.top_k, self.shard_size, self.prefix = top_k, shard_size, shard_prefix
        self.index: dict[str, str] = _read_index(self.root)
        self._pending: dict[str, Tensor] = {}
        self._pending_ids: list[str] = []

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.index or sample_id in self._pending_ids

    def add(self, sample_id: str, values: Tensor, indices: Tensor) -> None:
        if "/" in sample_id:
            raise ValueError(f"sample id {sample_id!r} must not contain '/'")
        if values.shape != indices.shape or values.shape[-1] != self.top_k:
            raise ValueError(f"expected values and indices of shape [T, {self.top_k}], got {tuple(values.shape)} "
                             f"and {tuple(indices.shape)}")
        if sample_id in self:
            return
        self._pending[f"{sample_id}/values"] = values.detach().to(torch.bfloat16).cpu().contiguous()
        self._pending[f"{sample_id}/indices"] = indices.detach().to(torch.int32).cpu().contiguous()
        self._pending_ids.append(sample_id)
        if len(self._pending_ids) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending_ids:
            return
        rank = os.environ.get("RANK", "0")
        name = f"{self.prefix}-r{rank}-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = self.root / f".{name}.tmp"
        save_file(self._pending, str(tmp))
        with open(tmp, "rb") as f:  # the data reaches the disk before the rename that publishes it
            os.fsync(f.fileno())
        tmp.replace(self.root / name)
        fsync_dir(self.root)
        with waiting_lock(self.root / ".index.lock"):
            # merge: another writer may have added its samples since we read the index (the first entry of an id
            # stays: both shards hold the same targets)
            merged = _read_index(self.root)
            for i in self._pending_ids:
                merged.setdefault(i, name)
            atomic_write_json(self.root / "index.json", merged)
        self.index = merged
        self._pending, self._pending_ids = {}, []

    def close(self) -> None:
        self.flush()


class TopKCache:
    """Read side: ``cache[sample_id] -> (values float32 [T, K], indices int64 [T, K])``."""

    def __init__(self, root: str | Path, *, vocab_size: int | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no teacher cache at {self.root} (missing meta.json); write one with "
                                    f"`vamba distill-cache`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{self.root}: cache format {self.meta.get('format')} is not one of {READABLE_FORMATS}")
        if vocab_size is not None:
            self.check_vocab(vocab_size)
        self.index = _read_index(self.root)
        self._shard_name: str | None = None
        self._shard: dict[str, Tensor] = {}

    def check_vocab(self, vocab_size: int) -> None:
        """Raises ``ValueError`` when the cache's token ids index another vocabulary than the model's."""
        if self.meta["vocab_size"] != vocab_size:
            raise ValueError(f"{self.root}: cache written for vocabulary {self.meta['vocab_size']}, model has {vocab_size}")

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.index

    def __getitem__(self, sample_id: str) -> tuple[Tensor, Tensor]:
        if sample_id not in self.index:
            raise KeyError(f"sample {sample_id!r} is not in the teacher cache {self.root}")
        name = self.index[sample_id]
        if name != self._shard_name:  # one shard in memory: reads follow the writer's order
            safetensors_header(self.root / name)  # a truncated shard: an error naming it
            self._shard, self._shard_name = load_file(str(self.root / name)), name
        return self._shard[f"{sample_id}/values"].float(), self._shard[f"{sample_id}/indices"].long()


def _read_index(root: Path) -> dict[str, str]:
    path = root / "index.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_cache(cfg) -> int:
    """``vamba distill-cache``: run the teacher (``stage.distill.teacher``) over the training data of ``cfg``
    (same experiment / data keys as the training run) and write each sample's top-k logits to
    ``stage.distill.cache_dir``, with the settings they depend on in its ``meta.json``. Returns the number of
    samples in the cache.

    Resumable: samples already in the index are skipped. Frames must be deterministic (``data.sampling`` other
    than ``random``), or the cached targets would belong to other frames than the student sees.
    """
    from vamba.data.collate import Collator
    from vamba.data.released import random_video_sources
    from vamba.data.teacher_view import build_teacher_view
    from vamba.models.presets import special_token_ids
    from vamba.training.build import build_dataset, load_teacher, load_tokenizer
    from vamba.training.distill import supervised_positions, teacher_topk
    from vamba.training.teacher import teacher_logits_at
    from vamba.utils.provenance import header

    d = cfg.stage.distill
    if not d.teacher or not d.cache_dir:
        raise ConfigError("vamba distill-cache needs stage.distill.teacher=<Qwen2-VL checkpoint> and "
                          "stage.distill.cache_dir=<output folder>")
    if cfg.data.sampling == "random":
        raise ConfigError("data.sampling=random draws other frames each epoch; cache with uniform or fps sampling")
    if d.top_k is None:
        raise ConfigError("stage.distill.top_k must be set for a cache (the full vocabulary per token is too large)")
    if cfg.data.tokenizer is None:
        cfg.data.tokenizer = d.teacher
    device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    tok = load_tokenizer(cfg)
    teacher = load_teacher(d.teacher, dtype=torch.bfloat16 if cfg.optim.bf16 else torch.float32).to(device)
    ids = special_token_ids(tok)
    # before the data: resuming into a folder written for other settings fails at once
    writer = TopKCacheWriter(d.cache_dir, top_k=d.top_k, vocab_size=teacher.config.text_config.vocab_size,
                             teacher=str(d.teacher), settings=cache_settings(cfg, tok, d.teacher),
                             written_with={**header(device), "teacher_dtype": str(teacher.dtype)})
    dataset = build_dataset(cfg, tok)
    samples = getattr(dataset, "dataset", dataset)  # packed rows: cache the samples under them
    drawn = random_video_sources(samples.data)
    if drawn:
        raise ConfigError(f"the released data config samples the videos of {drawn} with video_sample_type: rand, "
                          f"other frames each epoch; cache with middle (or a fixed fps)")
    collate = Collator(tok.pad_token_id)
    for i in range(len(samples)):
        sample = samples[i]
        if sample.key in writer:
            continue
        batch = collate([sample])
        view = build_teacher_view(batch, vision_start_id=ids["vision_start_token_id"],
                                  video_pad_id=ids["video_token_id"], pad_id=tok.pad_token_id)
        view.inputs = {k: v.to(device) for k, v in view.inputs.items()}
        if "pixel_values_videos" in view.inputs:
            view.inputs["pixel_values_videos"] = view.inputs["pixel_values_videos"].to(teacher.dtype)
        positions = supervised_positions(batch["labels"]).nonzero()
        values, indices = teacher_topk(teacher_logits_at(teacher, view, positions), d.top_k)
        writer.add(sample.key, values, indices)
    writer.close()
    return len(writer.index)
