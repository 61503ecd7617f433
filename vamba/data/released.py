"""Released VAMBA data configs (TIGER-AI-Lab/Vamba ``train/data_configs/*.yaml``) read as a mixture.

Such a file is a top-level ``data:`` list of sources; ``Mixture.from_yaml`` recognises that shape (or a top-level
``format: vamba_released``) and hands the file here. Each source maps onto our pipeline as the released loader
(``train/data.py``, ``load_data_from_config`` and its dataset classes) used it; docs/training.md, "Coming from the
released scripts", has the table. In short:

- records: ``json_path`` (``.json`` list or ``.jsonl``); each record's media is ``os.path.join(data_path,
  record["image"])`` for images and videos alike, its kind is the source's ``dataset_type``;
- ``format``: ``caption``/``caption_packed`` (``caption`` is the reply to a caption prompt),
  ``conversation``/``conversation_packed`` (LLaVA ``conversations``; turns other than human/gpt are dropped, as
  released), ``llava_video_packed`` (``all_conversations``: the QA lists of one video, joined here into one
  multi-turn conversation over the video, which the video reaches once, as released);
- record order and count: ``shuffle`` (Python ``random.seed(42)`` then ``random.shuffle``, as released),
  ``sample_ratio`` and ``max_size`` truncation, ``sample_ratio > 1`` repeats; ``pack_size`` groups records into
  the units the released mixing counts (``ceil(n / pack_size)``); several ``train`` sources are mixed by the
  released square-root balancing (``dataset_balancing``, True in the released scripts): source i contributes
  ``int(N * min(1.1 * sqrt(n_i) / sum_j sqrt(n_j), 1))`` units, cycling through its list; sources of another
  ``split`` are left out (the released scripts evaluate none). Rows are then packed by our token budgets;
- frames: ``video_sample_type`` (``middle``, ``rand``, ``fps<x>``: ``vamba.data.released_sampling``) and
  ``video_num_frames`` (a count, or ``auto``: as many as ``max_img_seq_len`` encoder patches hold at the video's
  edge-resized size, at most its length); resize: ``img_do_resize: false`` applies the
  ``img_shortest_edge``/``img_longest_edge`` rule, ``true`` skips it (the released processor ignored its own
  ``do_resize``, so Qwen2-VL's smart resize runs in both cases, as here).

Unknown fields, a missing required field and values the released loader could not run with are errors naming
the source and the field.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vamba.data.chat import Message, SampleError, messages_from_llava
from vamba.data.formats import CAPTION_PROMPTS, Media, RawSample, read_records
from vamba.data.mixture import Mixture, MixtureConfig
from vamba.data.sampling import FrameSampling
from vamba.utils.paths import is_inside

log = logging.getLogger(__name__)

RELEASED_FORMATS = ("caption", "caption_packed", "conversation", "conversation_packed", "llava_video_packed")
PACKED_FORMATS = ("caption_packed", "conversation_packed")  # the released classes that group pack_size records
# The released scripts' --max_img_seq_len: the `video_num_frames: auto` budget (encoder patches) of every source.
RELEASED_MAX_IMG_SEQ_LEN = 120_000
SHUFFLE_SEED = 42  # the released loader's fixed seed for shuffle and sample_ratio > 1
_PLACEHOLDER = re.compile(r"<(image|video)>[ \n]?")


@dataclass
class ReleasedSourceConfig:
    """One entry of a released config's ``data:`` list; defaults are the released loader's."""

    json_path: str
    data_path: str
    name: str
    dataset_type: Literal["image", "video"]
    format: str
    split: str = "train"
    shuffle: bool = False
    max_size: int | None = None
    sample_ratio: float = 1.0
    pack_size: int = 1
    img_do_resize: bool = False
    img_shortest_edge: int | None = None
    img_longest_edge: int | None = None
    video_sample_type: str = "rand"
    video_num_frames: int | str = "auto"
    max_img_seq_len: int | None = None  # None: the run's (data.max_img_seq_len)
    num_tries: int = 5  # read and checked; our skip policy replaces the released retries (docs/data.md)
    max_txt_seq_len: int | None = None  # per source: not supported (see check)
    logit_cache_path: str | None = None  # not supported (see check)

    def check(self, where: str) -> None:
        """Reject values the released loader could not run with, or that have no counterpart here."""
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"{where} ({self.name!r}): {field}={getattr(self, field)!r}: {why}")

        for field in ("json_path", "data_path", "name", "format", "split", "video_sample_type"):
            if not isinstance(getattr(self, field), str):
                raise bad(field, "must be a string")
        if self.dataset_type not in ("image", "video"):
            raise bad("dataset_type", "must be image or video")
        if self.format not in RELEASED_FORMATS:
            raise bad("format", f"must be one of {', '.join(RELEASED_FORMATS)}")
        for field in ("shuffle", "img_do_resize"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "must be true or false")
        for field in ("pack_size", "num_tries"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(field, "must be a positive integer")
        for field in ("max_size", "img_shortest_edge", "img_longest_edge", "max_img_seq_len"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise bad(field, "must be a positive integer")
        if not isinstance(self.sample_ratio, (int, float)) or isinstance(self.sample_ratio, bool) or \
                self.sample_ratio <= 0:
            raise bad("sample_ratio", "must be a positive number")
        if (self.img_shortest_edge is None) != (self.img_longest_edge is None) and not self.img_do_resize:
            raise bad("img_longest_edge" if self.img_longest_edge is None else "img_shortest_edge",
                      "give both img_shortest_edge and img_longest_edge, or neither (with one of them the released "
                      "loader fails on every video and ignores the edge rule for images)")
        if self.dataset_type == "video":
            if self.video_sample_type not in ("middle", "rand") and not _fps_rate(self.video_sample_type):
                raise bad("video_sample_type", "must be middle, rand or fps<rate> (e.g. fps0.5)")
            n = self.video_num_frames
            if n != "auto" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
                raise bad("video_num_frames", "must be a positive integer or auto")
            if n == "auto" and self.img_do_resize:
                raise bad("img_do_resize", "video_num_frames: auto needs the edge rule (img_do_resize: false); "
                          "the released loader reads a processor size that Qwen2-VL's does not have and fails")
        if self.max_txt_seq_len is not None:
            raise bad("max_txt_seq_len", "a per-source text limit is not supported: data.max_text_tokens is one limit "
                      "for the mixture (and over-long samples are skipped, not truncated)")
        if self.logit_cache_path is not None:
            raise bad("logit_cache_path", "per-record logit files are not supported: write a top-k teacher cache "
                      "with `vamba distill-cache` and train with stage.distill.source=cache")

    def sampling(self, max_img_seq_len: int) -> FrameSampling:
        """The frame sampling of this source's videos."""
        rate = _fps_rate(self.video_sample_type)
        if rate:  # the released fps sampler takes every clip centre; the frame count is not used
            return FrameSampling("released_fps", fps=rate)
        mode = "released_middle" if self.video_sample_type == "middle" else "released_rand"
        if self.video_num_frames == "auto":
            budget = self.max_img_seq_len if self.max_img_seq_len is not None else max_img_seq_len
            return FrameSampling(mode, num_frames=1, patch_budget=budget)  # num_frames set per video
        return FrameSampling(mode, num_frames=int(self.video_num_frames))

    def edges(self) -> tuple[int | None, int | None]:
        """(shortest, longest) of the released edge rule; (None, None) when it is skipped."""
        if self.img_do_resize:
            return None, None
        return self.img_shortest_edge, self.img_longest_edge


def _fps_rate(sample_type: Any) -> float | None:
    """The rate of an ``fps<x>`` sample type, None for anything else."""
    if not isinstance(sample_type, str) or not sample_type.startswith("fps"):
        return None
    try:
        rate = float(sample_type[3:])
    except ValueError:
        return None
    return rate if rate > 0 and math.isfinite(rate) else None


def is_released_config(data: Any) -> bool:
    """A released data config: a mapping whose ``data`` is a list of sources with ``json_path`` and ``data_path``
    (our mixtures have ``sources`` instead), or one that says ``format: vamba_released``."""
    if not isinstance(data, dict):
        return False
    if data.get("format") == "vamba_released":
        return True
    entries = data.get("data")
    return "sources" not in data and isinstance(entries, list) and bool(entries) and all(
        isinstance(e, dict) and "json_path" in e and "data_path" in e for e in entries)


def load_released_config(path: str | os.PathLike, data: dict) -> list[ReleasedSourceConfig]:
    """The checked sources of a parsed released config at ``path``."""
    unknown = sorted(set(data) - {"data", "format"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown} in a released data config (it holds `data:`)")
    if data.get("format", "vamba_released") != "vamba_released":
        raise ValueError(f"{path}: format={data['format']!r}; a released data config says format: vamba_released")
    entries = data.get("data")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: a released data config needs a non-empty `data:` list")
    fields = {f.name: f for f in dataclasses.fields(ReleasedSourceConfig)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    sources = []
    for n, entry in enumerate(entries):
        where = f"{path}: data[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            raise ValueError(f"{where} ({entry.get('name')!r}): unknown field(s) {unknown}; the released loader "
                             f"reads {sorted(fields)}")
        missing = [k for k in required if k not in entry]
        if missing:
            raise ValueError(f"{where} ({entry.get('name')!r}): missing field(s) {missing}")
        source = ReleasedSourceConfig(**entry)
        source.check(where)
        sources.append(source)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: source names must be unique (they key samples and skips), got {names}")
    return sources


def record_units(config: ReleasedSourceConfig, num_records: int) -> list[list[int]]:
    """The released dataset's items as lists of record indices: shuffle, truncation and repeats as released, then
    groups of ``pack_size`` for the packed formats (one record per item otherwise)."""
    order = list(range(num_records))
    if config.shuffle:
        random.Random(SHUFFLE_SEED).shuffle(order)  # = random.seed(42); random.shuffle(data)
    max_size = config.max_size
    if config.sample_ratio < 1.0:
        max_size = int(num_records * config.sample_ratio)
    if max_size:
        order = order[:max_size]
    idx = list(range(len(order)))
    if config.sample_ratio > 1.0:
        extra = int(len(order) * (config.sample_ratio - 1))
        added: list[int] = []
        while extra > len(idx):
            added += idx
            extra -= len(idx)
        added += random.Random(SHUFFLE_SEED).sample(idx, extra)
        idx = idx + added
    items = [order[i] for i in idx]
    size = config.pack_size if config.format in PACKED_FORMATS else 1
    return [items[i:i + size] for i in range(0, len(items), size)]


def balanced_counts(lengths: list[int]) -> list[int]:
    """Items per source of the released ``DatasetCollection`` with balancing: ``int(N * min(1.1 * p_i, 1))`` with
    ``p_i`` proportional to ``sqrt(n_i)``; one source alone is used as it is."""
    if len(lengths) == 1:
        return list(lengths)
    total = sum(lengths)
    roots = [math.sqrt(n) for n in lengths]
    return [int(total * min(r / sum(roots) * 1.1, 1)) for r in roots]


class ReleasedSource:
    """The records of one released source; ``get(i)`` builds record ``i`` (or raises ``SampleError``)."""

    def __init__(self, config: ReleasedSourceConfig, max_img_seq_len: int, confine_media: bool = True) -> None:
        self.config = config
        self.confine_media = confine_media
        self.name = config.name
        self.records = read_records(config.json_path)
        self.sampling = config.sampling(max_img_seq_len) if config.dataset_type == "video" else None

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> RawSample:
        record = self.records[i]
        key = f"{self.name}:{i}"
        if not isinstance(record, dict):
            raise SampleError(f"record is a {type(record).__name__}, not an object")
        if "__malformed__" in record:
            raise SampleError(record["__malformed__"])
        path = record.get("image")
        if not isinstance(path, str) or not path:
            raise SampleError(f"record without an 'image' path (released records name images and videos there): "
                              f"{str(path)[:60]!r}")
        kind = self.config.dataset_type
        full = os.path.join(self.config.data_path, path)
        if self.confine_media and not is_inside(full, self.config.data_path):
            raise SampleError(f"media path {path!r} leaves data_path {self.config.data_path} "
                              f"(data.confine_media=false allows it)")
        media = Media(kind, full, self.sampling, self.config.edges())
        fmt = self.config.format
        if fmt in ("caption", "caption_packed"):
            caption = record.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise SampleError("caption record without a non-empty 'caption'")
            # Our own caption prompts (the released ones are its text), one per record by index; no placeholder:
            # the vision marker goes before the prompt, as released.
            prompts = CAPTION_PROMPTS[kind]
            messages = [Message("user", prompts[i % len(prompts)]), Message("assistant", caption)]
        elif fmt in ("conversation", "conversation_packed"):
            messages = messages_from_llava(_human_gpt(record.get("conversations")))
        else:  # llava_video_packed
            groups = record.get("all_conversations")
            if not isinstance(groups, list) or not groups:
                raise SampleError("'all_conversations' must be a non-empty list of conversations")
            messages = []
            for g, conversation in enumerate(groups):
                turns = messages_from_llava(_human_gpt(conversation))
                if g:  # the video is given once, before the first conversation
                    turns = [Message(m.role, _PLACEHOLDER.sub("", m.content)) for m in turns]
                messages += turns
        return RawSample(key, messages, [media])


def random_video_sources(mixture: Any) -> list[str]:
    """Names of a released mixture's sources whose videos are sampled at random (``rand``); [] for any other data."""
    if not isinstance(mixture, ReleasedMixture):
        return []
    return [s.name for s in mixture.sources if s.sampling is not None and s.sampling.mode == "released_rand"]


def _human_gpt(conversation: Any) -> Any:
    """The released loader keeps only human and gpt turns (other roles are skipped); malformed input is left for
    ``messages_from_llava`` to report."""
    if not isinstance(conversation, list):
        return conversation
    return [t for t in conversation if not isinstance(t, dict) or t.get("from") in ("human", "gpt")]


class ReleasedMixture(Mixture):
    """A released data config as a ``Mixture``: ``order[i] = (source, record)``, one seeded shuffle over all."""

    def __init__(self, configs: list[ReleasedSourceConfig], max_img_seq_len: int = RELEASED_MAX_IMG_SEQ_LEN,
                 seed: int = 0, confine_media: bool = True) -> None:
        train = [c for c in configs if c.split == "train"]
        for c in configs:
            if c.split != "train":
                log.info("released data config: source %r (split %r) is not trained on", c.name, c.split)
        if not train:
            raise ValueError(f"no source with split: train among {[c.name for c in configs]}")
        self.released = train
        self.config = MixtureConfig(sources=[], seed=seed)
        self.sources = [ReleasedSource(c, max_img_seq_len, confine_media) for c in train]
        units = []
        for c, source in zip(train, self.sources):
            if len(source) == 0:
                raise ValueError(f"source {c.name!r}: {c.json_path} has no records (an empty file?)")
            units.append(record_units(c, len(source)))
        counts = balanced_counts([len(u) for u in units])
        self.order = [(s, r) for s, (u, count) in enumerate(zip(units, counts))
                      for k in range(count) for r in u[k % len(u)]]
        if not self.order:
            raise ValueError(f"the released config's sources {[c.name for c in train]} give no samples")
        perm = torch.randperm(len(self.order), generator=torch.Generator().manual_seed(seed)).tolist()
        self.order = [self.order[p] for p in perm]

    @classmethod
    def from_file(cls, path: str | os.PathLike, data: dict, max_img_seq_len: int = RELEASED_MAX_IMG_SEQ_LEN,
                  seed: int = 0, confine_media: bool = True) -> ReleasedMixture:
        """``data`` is the parsed YAML at ``path``; relative paths inside resolve against the current directory,
        as the released loader (run from its repository root) resolved them."""
        if not Path(path).exists():
            raise FileNotFoundError(f"data config {path} does not exist")
        return cls(load_released_config(path, data), max_img_seq_len, seed, confine_media)

    def source_name(self, i: int) -> str:
        return self.released[self.order[i][0]].name
