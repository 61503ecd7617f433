"""Dataset formats -> one record type (``RawSample``: chat messages + media references).

- ``caption``: CC12M / PixelProse-style pairs in ``.jsonl``, ``.json`` (a list) or ``.parquet``: a media field
  (``image``, ``video`` or ``media``: path relative to ``media_root``) and ``caption``.
- ``webdataset``: tar shards whose members share a key (``000001.mp4`` + ``000001.txt`` / ``.json``); the
  media is read from the shard as bytes.
- ``llava``: LLaVA-OneVision / LLaVA-Video-178K conversation JSON (or JSONL): ``conversations`` of
  ``{"from", "value"}`` with ``<image>`` / ``<video>`` placeholders; ``image`` (str or list) or ``video``.
- ``hf``: a local Hugging Face ``datasets`` directory (``save_to_disk`` arrow, or parquet files), rows in the
  caption or llava layout; image columns may hold decoded images, ``{"bytes", "path"}`` dicts or paths.

Sources index their records up front (cheap) and build a sample on ``get(i)``; a malformed record raises
``SampleError`` there, so the dataset can count and skip it.
"""
from __future__ import annotations

import glob
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vamba.data.chat import Message, SampleError, messages_from_llava
from vamba.data.sampling import FrameSampling
from vamba.utils.paths import is_inside

MediaKind = Literal["image", "video"]
FormatName = Literal["caption", "webdataset", "llava", "hf"]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")

# Caption prompts: the user turn of a caption pair (picked per record, deterministically).
CAPTION_PROMPTS = {
    "image": ("Describe this image.", "What is shown in this image?", "Write a short caption for the image."),
    "video": ("Describe this video.", "What happens in this video?", "Write a short caption for the video."),
}


@dataclass
class Media:
    """One visual item: ``source`` is a file path, a frame-folder path, encoded bytes or a PIL image.

    ``sampling`` and ``edges`` (shortest, longest) override the processing config's for this item: a released
    data config (``vamba.data.released``) sets frames and resize per source. None: the config's."""

    kind: MediaKind
    source: Any
    sampling: FrameSampling | None = None
    edges: tuple[int | None, int | None] | None = None


@dataclass
class RawSample:
    key: str
    messages: list[Message]
    media: list[Media] = field(default_factory=list)


def media_kind(name: str, default: MediaKind | None = None) -> MediaKind:
    """``image`` or ``video`` from a file name (a folder of frames is a video)."""
    ext = os.path.splitext(str(name))[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if default is not None:
        return default
    if ext == "":
        return "video"  # a frame folder
    raise SampleError(f"cannot tell whether {name!r} is an image or a video")


def _resolve(root: Path | None, value: Any, confine: bool = True) -> Any:
    """``value`` (a row's media path) under ``root``. With ``confine`` a path that leaves ``root`` (``../..``, an
    absolute path) is a bad sample: a data set from elsewhere must not make the run read ``/etc/passwd``."""
    if not isinstance(value, str) or not value:
        raise SampleError(f"bad media path {value!r}")
    if root is None:
        return value
    path = str(root / value)
    if confine and not is_inside(path, root):
        raise SampleError(f"media path {value!r} leaves media_root {root} (data.confine_media=false allows it)")
    return path


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records of a ``.jsonl``, ``.json`` (list) or ``.parquet`` annotation file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    records.append({"__malformed__": f"{path}:{n}: not valid JSON"})
        return records
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}){' (an empty file)' if not path.stat().st_size else ''}") \
                from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return data
    raise ValueError(f"unsupported annotation file {path} (expected .jsonl, .json or .parquet)")


def _media_fields(record: dict, root: Path | None, default_kind: MediaKind | None, confine: bool = True) -> list[Media]:
    """Media of a caption / llava record (``image``: str or list; ``video``: str; ``media``: str or list)."""
    media: list[Media] = []
    for key, kind in (("image", "image"), ("video", "video"), ("media", None)):
        value = record.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, dict) and ("bytes" in v or "path" in v):  # datasets Image feature, undecoded
                src = v.get("bytes") or _resolve(root, v.get("path"), confine)
                media.append(Media(kind or media_kind(v.get("path") or "", default_kind or "image"), src))
            elif isinstance(v, (bytes, str)):
                src = v if isinstance(v, bytes) else _resolve(root, v, confine)
                media.append(Media(kind or media_kind(v if isinstance(v, str) else "", default_kind), src))
            elif hasattr(v, "convert"):  # a decoded PIL image (datasets Image feature)
                media.append(Media("image", v))
            else:
                raise SampleError(f"bad {key!r} field: {str(v)[:60]!r}")
    return media


def caption_sample(record: dict, key: str, index: int, root: Path | None,
                   default_kind: MediaKind | None = None, confine: bool = True) -> RawSample:
    if "__malformed__" in record:
        raise SampleError(record["__malformed__"])
    caption = record.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise SampleError("caption record without a non-empty 'caption'")
    media = _media_fields(record, root, default_kind, confine)
    if len(media) != 1:
        raise SampleError(f"a caption record needs exactly one media item, got {len(media)}")
    prompts = CAPTION_PROMPTS[media[0].kind]
    prompt = prompts[index % len(prompts)]
    return RawSample(key, [Message("user", f"<{media[0].kind}>\n{prompt}"), Message("assistant", caption.strip())],
                     media)


def llava_sample(record: dict, key: str, root: Path | None, default_kind: MediaKind | None = None,
                 confine: bool = True) -> RawSample:
    if "__malformed__" in record:
        raise SampleError(record["__malformed__"])
    messages = messages_from_llava(record.get("conversations"))
    return RawSample(key, messages, _media_fields(record, root, default_kind, confine))


class Source:
    """A list of records in one format; ``get(i)`` builds sample ``i`` (or raises ``SampleError``).

    ``confine_media``: a media path that leaves ``media_root`` is a bad sample (counted skip), not a file read.
    """

    def __init__(self, name: str, format: FormatName, path: str | os.PathLike, media_root: str | os.PathLike | None
                 = None, media_kind: MediaKind | None = None, confine_media: bool = True) -> None:
        self.name, self.format, self.path = name, format, Path(path)
        self.media_root = Path(media_root) if media_root is not None else self.path.parent
        self.default_kind = media_kind
        self.confine_media = confine_media
        if format in ("caption", "llava"):
            self._records = read_records(self.path)
        elif format == "hf":
            self._records = _load_hf(self.path)
        elif format == "webdataset":
            self._shards, self._records = _index_shards(str(path))
        else:
            raise ValueError(f"unknown dataset format {format!r}; expected caption, webdataset, llava or hf")

    def __len__(self) -> int:
        return len(self._records)

    def get(self, i: int) -> RawSample:
        record = self._records[i]
        key = f"{self.name}:{i}"
        if not isinstance(record, dict):
            raise SampleError(f"record is a {type(record).__name__}, not an object")
        if self.format == "webdataset":
            return _webdataset_sample(self._shards, record, key, i)
        is_llava = "conversations" in record
        if self.format == "llava" or (self.format == "hf" and is_llava):
            return llava_sample(record, key, self.media_root, self.default_kind, self.confine_media)
        return caption_sample(record, key, i, self.media_root, self.default_kind, self.confine_media)


def _load_hf(path: Path) -> Any:
    import datasets

    if not path.exists():
        raise FileNotFoundError(f"dataset directory {path} does not exist")
    if (path / "dataset_info.json").exists() or (path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
    else:
        files = sorted(glob.glob(str(path / "**" / "*.parquet"), recursive=True))
        if not files:
            raise FileNotFoundError(f"{path} is neither a saved datasets directory nor holds parquet files")
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"{path} holds splits {list(ds)} but no 'train'")
        ds = ds["train"]
    return ds


def _index_shards(pattern: str) -> tuple[list[str], list[dict]]:
    """Group each shard's members by key; a record remembers where its members' bytes are."""
    shards = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not shards or not all(os.path.exists(s) for s in shards):
        raise FileNotFoundError(f"no webdataset shard matches {pattern}")
    records: list[dict] = []
    for s, shard in enumerate(shards):
        groups: dict[str, dict] = {}
        try:
            with tarfile.open(shard) as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    key, _, ext = base.partition(".")
                    prefix = os.path.join(os.path.dirname(m.name), key)
                    groups.setdefault(prefix, {"__shard__": s, "__key__": prefix})[ext.lower()] = (m.offset_data,
                                                                                                  m.size)
        except tarfile.TarError as e:  # a truncated shard keeps the members read so far
            groups.setdefault("__broken__", {"__malformed__": f"{shard}: {e}"})
        records += list(groups.values())
    return shards, records


def _read_member(shard: str, where: tuple[int, int]) -> bytes:
    offset, size = where
    with open(shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise SampleError(f"{shard} is truncated")
    return data


def _webdataset_sample(shards: list[str], record: dict, key: str, index: int) -> RawSample:
    if "__malformed__" in record:
        raise SampleError(record["__malformed__"])
    shard = shards[record["__shard__"]]
    key = f"{key}:{record['__key__']}"
    media_ext = [e for e in record if "." + e.split(".")[-1] in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS]
    if len(media_ext) != 1:
        raise SampleError(f"sample {record['__key__']} has {len(media_ext)} media members")
    ext = media_ext[0]
    media = Media(media_kind("x." + ext.split(".")[-1]), _read_member(shard, record[ext]))
    meta: dict = {}
    if "json" in record:
        try:
            meta = json.loads(_read_member(shard, record["json"]))
        except json.JSONDecodeError as e:
            raise SampleError(f"sample {record['__key__']}: bad json member ({e})") from None
    if isinstance(meta, dict) and "conversations" in meta:
        return RawSample(key, messages_from_llava(meta["conversations"]), [media])
    caption = meta.get("caption") if isinstance(meta, dict) else None
    if caption is None and "txt" in record:
        caption = _read_member(shard, record["txt"]).decode("utf-8", errors="strict")
    if not isinstance(caption, str) or not caption.strip():
        raise SampleError(f"sample {record['__key__']} has no caption")
    prompts = CAPTION_PROMPTS[media.kind]
    return RawSample(key, [Message("user", f"<{media.kind}>\n{prompts[index % len(prompts)]}"),
                           Message("assistant", caption.strip())], [media])
