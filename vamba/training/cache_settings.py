"""What a teacher top-k cache's logits depend on: recorded in its ``meta.json`` (``settings``) by
``vamba distill-cache`` and compared with the training run's settings when ``vamba train`` reads the cache.

A sample's cached top-k depend on the teacher's weights, the sample's tokens (the mixture's records, the tokenizer,
the system prompt) and its pixels (which frames, at which size, from which decoder). Recorded keys, each named as
the setting that sets it:

- ``teacher.fingerprint``: ``stage.distill.teacher`` (compared only when the training run names a teacher too;
  the path itself is kept in ``meta.json`` for the message, not compared: a checkpoint may move);
- ``data.mixture.fingerprint``, ``data.tokenizer.fingerprint``: contents, not paths;
- ``data.num_frames``, ``data.sampling``, ``data.min_pixels``, ``data.max_pixels``;
- ``data.processing.*``: the pipeline settings fixed in code (pre-resize edges, odd frames, fps, per-video token
  budget, system prompt, video backend and fallback), so a code change that alters the samples is caught too;
- ``stage.distill.top_k``: the cached K is the one distillation uses, whatever the run's key says.

Not recorded, because a cached sample's logits cannot depend on them: ``data.max_text_tokens`` /
``data.max_video_tokens`` (a sample over a limit is skipped, never cut; one absent from the cache is an error
naming it when a batch needs it), ``data.seed`` (only random sampling draws with it, and a cache refuses random
sampling), ``data.packing`` (the teacher reads each sample unpacked), ``stage.distill.temperature`` (the cache holds
raw logits; the loss applies the temperature), decoding timeouts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from vamba.training.config import ConfigError, TrainConfig, flatten

# Files up to this size are hashed whole; larger ones (checkpoint shards, webdataset tars) by their size and
# SAMPLES blocks spread over the file: reading 16 GiB of weights at every training start would cost minutes.
WHOLE_FILE_BYTES = 64 * 2**20
SAMPLES = 64
BLOCK = 64 * 2**10

# ProcessingConfig fields -> the training key that sets them (vamba.training.build.data_config)
_KEYS = {"sampling.num_frames": "data.num_frames", "sampling.mode": "data.sampling",
         "vision.min_pixels": "data.min_pixels", "vision.max_pixels": "data.max_pixels"}
# ProcessingConfig fields that cannot change a cached sample's logits (see the module docstring)
_IGNORED = {"max_text_tokens", "max_video_tokens", "seed", "skip_log", "shard", "on_error", "max_consecutive_skips",
            "video.timeout_s"}


def _digest_file(h: Any, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        if size <= WHOLE_FILE_BYTES:
            h.update(f.read())
            return
        for i in range(SAMPLES):  # first and last block included
            f.seek((size - BLOCK) * i // (SAMPLES - 1))
            h.update(f.read(BLOCK))


def teacher_fingerprint(path: str | Path) -> str:
    """sha256 over a checkpoint directory's ``config.json`` and weight files (``*.safetensors``, ``*.bin``;
    large files sampled, so not a full content hash, but a retrained or converted checkpoint differs).

    Raises:
        ConfigError: ``path`` is not a local checkpoint directory.
    """
    root = Path(path)
    if not (root / "config.json").is_file():
        raise ConfigError(f"stage.distill.teacher={str(path)!r}: not a checkpoint directory (no config.json); a "
                          f"teacher cache records the teacher's fingerprint, so it needs a local checkpoint")
    h = hashlib.sha256()
    for file in [root / "config.json", *sorted(root.glob("*.safetensors")), *sorted(root.glob("*.bin"))]:
        _digest_file(h, file)
    return h.hexdigest()


def mixture_fingerprint(path: str | Path) -> str:
    """sha256 over the mixture YAML and every source's annotation file(s): a file, the files of a dataset
    folder, or the shards of a glob (large ones sampled). The media files the records name are not read."""
    import glob

    from vamba.data.mixture import load_mixture_config

    h = hashlib.sha256()
    _digest_file(h, Path(path))
    for source in load_mixture_config(path).sources:
        h.update(f"\0source {source.name} {source.format} {source.media_kind}\0".encode())
        root = Path(source.path)
        if root.is_dir():
            files = sorted(f for f in root.rglob("*") if f.is_file())
        elif root.is_file():
            files = [root]
        else:
            files = sorted(Path(f) for f in glob.glob(source.path))
        for file in files:
            _digest_file(h, file)
    return h.hexdigest()


def tokenizer_fingerprint(tok: Any) -> str:
    """sha256 of the tokenizer's full serialisation (vocabulary, merges, normaliser, added and special tokens):
    the same tokenizer read from two folders has one fingerprint."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    special = json.dumps({k: str(v) for k, v in sorted(tok.special_tokens_map.items())})
    return hashlib.sha256(f"{type(tok).__name__}\0{text}\0{special}".encode()).hexdigest()


def cache_settings(cfg: TrainConfig, tok: Any, teacher: str | None) -> dict[str, Any]:
    """The settings a cache written (or read) by a run of ``cfg`` depends on, keyed as in the module docstring.
    ``teacher``: the checkpoint whose fingerprint is included (None: the run names none; not compared)."""
    from vamba.training.build import data_config

    processing = flatten(dataclasses.asdict(data_config(cfg.data, None)))
    settings: dict[str, Any] = {}
    if teacher is not None:
        settings["teacher.fingerprint"] = teacher_fingerprint(teacher)
    settings["data.mixture.fingerprint"] = mixture_fingerprint(cfg.data.mixture)
    settings["data.tokenizer.fingerprint"] = tokenizer_fingerprint(tok)
    for field, value in sorted(processing.items()):
        if field not in _IGNORED:
            settings[_KEYS.get(field, f"data.processing.{field}")] = value
    settings["stage.distill.top_k"] = cfg.stage.distill.top_k
    return settings


def differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"key: cache <recorded>, this run <wanted>"`` for every key of ``wanted`` whose value differs (a key the
    cache lacks reads as ``<not recorded>``)."""
    return [f"{key}: cache {repr(recorded[key]) if key in recorded else '<not recorded>'}, this run {value!r}"
            for key, value in wanted.items() if key not in recorded or recorded[key] != value]


def check_cache_settings(meta: dict[str, Any], wanted: dict[str, Any], root: str | Path, *, check: bool = True
                         ) -> list[str]:
    """Compare a cache's recorded ``settings`` with the run's (``cache_settings``); returns the differences.

    Raises:
        ConfigError: (with ``check``) the cache predates recorded settings, or a setting differs; the message names
            each key with both values and how to regenerate. ``check=False`` (``stage.distill.check_cache=false``)
            returns the differences instead, for the caller to warn about.
    """
    regenerate = (f"write a cache for this run's settings into a new folder (`vamba distill-cache` with the same "
                  f"experiment/stage/data keys as this training run and stage.distill.cache_dir=<new folder>), or set "
                  f"stage.distill.check_cache=false to use {root} unchecked")
    if "settings" not in meta:
        found = [f"{root} was written before caches recorded what their logits depend on (format "
                 f"{meta.get('format')}): frames, pixels, data and teacher cannot be checked"]
    else:
        found = differences(meta["settings"], wanted)
        if found and "teacher.fingerprint" in wanted and "teacher.fingerprint" in meta["settings"]:
            found = [f"{d} (cache teacher {meta.get('teacher')})" if d.startswith("teacher.") else d for d in found]
    if found and check:
        what = "; ".join(found)
        raise ConfigError(f"stage.distill.cache_dir={str(root)!r} does not fit this run: {what}. Fix: {regenerate}")
    return found
