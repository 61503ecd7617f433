"""A data mixture: sources (format, annotation path, media root) with a weight or an exact sample count.

Mixture YAML (paths are relative to the YAML file)::

    seed: 0
    sources:
      - name: synth_captions          # used in sample keys and skip reports
        format: caption               # caption | webdataset | llava | hf
        path: captions.jsonl          # annotation file, shard glob or dataset directory
        media_root: .                 # media paths are relative to this (default: the annotation's folder)
        weight: 1.0                   # x the source size (0.5 = a random half, 2 = every record twice)
      - name: synth_video_qa
        format: llava
        path: llava_video.json
        num_samples: 200              # exact count instead of a weight (cycles through a shuffled order)

Unknown keys are errors (a typo must fail at start, not an hour in). The sample order is a deterministic
function of ``seed``. ``Mixture.from_yaml`` also reads a released VAMBA data config (a top-level ``data:`` list of
sources, ``vamba.data.released``) as it is.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from vamba.data.formats import FormatName, MediaKind, RawSample, Source


def from_dict(cls, data: dict[str, Any], where: str):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with the list of valid ones."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**data)


@dataclass
class SourceConfig:
    name: str
    format: FormatName
    path: str
    media_root: str | None = None
    media_kind: MediaKind | None = None
    weight: float | None = None
    num_samples: int | None = None

    def __post_init__(self) -> None:
        if self.weight is not None and self.num_samples is not None:
            raise ValueError(f"source {self.name!r}: give weight or num_samples, not both")
        if self.weight is not None and self.weight < 0:
            raise ValueError(f"source {self.name!r}: weight must be >= 0")
        if self.num_samples is not None and self.num_samples < 0:
            raise ValueError(f"source {self.name!r}: num_samples must be >= 0")


@dataclass
class MixtureConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    seed: int = 0


def load_mixture_config(path: str | os.PathLike) -> MixtureConfig:
    """Parse a mixture YAML; relative paths are resolved against the YAML's folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mixture file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    raw_sources = data.get("sources") if isinstance(data, dict) else None
    if not raw_sources:
        hint = (" (a released VAMBA data config? each `data:` entry needs json_path and data_path, or say "
                "`format: vamba_released` at the top)") if isinstance(data, dict) and "data" in data else ""
        raise ValueError(f"{path}: a mixture needs a non-empty 'sources' list{hint}")
    sources = []
    for n, raw in enumerate(raw_sources):
        cfg = from_dict(SourceConfig, raw, f"{path}: sources[{n}]")
        cfg.path = str(path.parent / cfg.path)
        if cfg.media_root is not None:
            cfg.media_root = str(path.parent / cfg.media_root)
        sources.append(cfg)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: source names must be unique, got {names}")
    return from_dict(MixtureConfig, {**data, "sources": sources}, str(path))


class Mixture:
    """The sources of a mixture and the sample order: ``mixture[i]`` is ``(source index, record index)``."""

    def __init__(self, config: MixtureConfig, confine_media: bool = True) -> None:
        self.config = config
        self.sources = [Source(s.name, s.format, s.path, s.media_root, s.media_kind, confine_media)
                        for s in config.sources]
        self.order: list[tuple[int, int]] = []
        for s, (cfg, source) in enumerate(zip(config.sources, self.sources)):
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + s)
            n = len(source)
            count = cfg.num_samples if cfg.num_samples is not None else round((1.0 if cfg.weight is None else
                                                                                cfg.weight) * n)
            if n == 0:
                raise ValueError(f"source {cfg.name!r}: {cfg.path} has no records (an empty file?)")
            picks: list[int] = []
            while len(picks) < count:  # whole shuffled passes, then a shuffled part of one
                picks += torch.randperm(n, generator=g).tolist()
            self.order += [(s, r) for r in picks[:count]]
        if not self.order:
            raise ValueError(f"the mixture of {[s.name for s in config.sources]} gives no samples (every weight or "
                             f"num_samples is 0)")
        # Interleave sources with one global shuffle so a batch mixes them in proportion.
        perm = torch.randperm(len(self.order), generator=torch.Generator().manual_seed(config.seed)).tolist()
        self.order = [self.order[p] for p in perm]

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, max_img_seq_len: int | None = None,
                  confine_media: bool = True) -> Mixture:
        """Our mixture YAML, or a released VAMBA data config (detected by its shape: vamba.data.released), whose
        ``video_num_frames: auto`` budget is ``max_img_seq_len`` (None: the released scripts' 120000).
        ``confine_media``: each source's media paths must stay inside its ``media_root`` (a released source's
        ``data_path``)."""
        from vamba.data import released  # released builds on this module: imported here, not at the top

        path = Path(path)
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
        if released.is_released_config(data):
            budget = released.RELEASED_MAX_IMG_SEQ_LEN if max_img_seq_len is None else max_img_seq_len
            return released.ReleasedMixture.from_file(path, data, budget, confine_media=confine_media)
        return cls(load_mixture_config(path), confine_media)

    def __len__(self) -> int:
        return len(self.order)

    def take(self, start: int, stop: int) -> Mixture:
        """Samples ``start:stop`` of this mixture's (shuffled) order, sharing its sources: a held-out split."""
        taken = Mixture.__new__(Mixture)  # not __init__: that would draw the order again
        taken.config, taken.sources, taken.order = self.config, self.sources, self.order[start:stop]
        return taken

    def get(self, i: int) -> RawSample:
        s, r = self.order[i]
        return self.sources[s].get(r)

    def source_name(self, i: int) -> str:
        return self.config.sources[self.order[i][0]].name
