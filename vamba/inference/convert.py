"""``vamba convert src=SRC out=DST``: any checkpoint VAMBA loads -> a ``vamba``-typed checkpoint with its processor.

    vamba convert src=TIGER-Lab/Vamba-Qwen2-VL-7B out=out/vamba-7b           # released checkpoint (qwen2_vl-typed)
    vamba convert src=path/to/Qwen2-VL-7B-Instruct out=out/vamba-7b-init     # Qwen2-VL: cross-attn from self-attn
    vamba convert src=ckpt/ out=out/ tokenizer=path/to/Qwen2-VL-7B-Instruct  # SRC without tokenizer files
    vamba convert ckpt/ out/                                                 # src and out may also be positional

The released checkpoint says ``model_type: qwen2_vl``, so transformers' Auto classes build plain Qwen2-VL from it
and drop every VAMBA weight. DST says ``model_type: vamba`` and holds a ``VambaProcessor``, so after
``import vamba.models``, ``AutoModelForImageTextToText.from_pretrained(DST)`` gives ``VambaForConditionalGeneration``
and ``AutoProcessor.from_pretrained(DST)`` a ``VambaProcessor`` (docs/model.md).

Processor settings (pixel limits, frames, edges) come from SRC's processor files (a Qwen2-VL or released
checkpoint's ``preprocessor_config.json``), else from the ``tokenizer=`` folder's, else the defaults (said on
stderr); keys given override. DST is written to a temporary folder beside it and renamed when complete; an existing
DST is refused unless ``overwrite=true``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vamba.data.processor import build_processor
from vamba.data.video_processor import VambaVideoProcessor, read_processor_dicts
from vamba.inference.chat import DTYPES
from vamba.utils.cli_args import parse_args
from vamba.utils.io import chmod_like_created

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


class ConversionError(ValueError):
    """SRC cannot be converted as asked (no tokenizer, tokens that disagree with the model, DST exists, ...)."""


@dataclass
class Converted:
    path: Path
    kind: str        # vamba | released | qwen2_vl (vamba.models.loading.checkpoint_kind)
    settings: str    # where the processor settings came from


def _local_source(src: str) -> str:
    """SRC as a local folder: a hub id becomes its snapshot in the local Hugging Face cache, never a download (what
    the docs promise: converting reads what you fetched, e.g. with ``hf download``, even when online)."""
    if os.path.exists(src) or os.path.isabs(src) or src.startswith("."):
        return src
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(src, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ConversionError(f"{src}: not a directory, nor a model id in the local Hugging Face cache (vamba "
                              f"convert does not download: fetch it first, e.g. `hf download {src}`)") from None


def _config_dict(src: str) -> dict[str, Any]:
    if os.path.isdir(src):
        file = os.path.join(src, "config.json")
        if not os.path.isfile(file):
            raise ConversionError(f"{src}: no config.json (not a checkpoint directory)")
    elif os.path.exists(src) or os.path.isabs(src) or src.startswith("."):
        raise ConversionError(f"{src}: not a checkpoint directory")
    else:  # a hub id, from the local Hugging Face cache
        from transformers.utils import cached_file

        file = cached_file(src, "config.json", _raise_exceptions_for_missing_entries=False)
        if file is None:
            raise ConversionError(f"{src}: no config.json: not a directory, nor a model id in the Hugging Face cache")
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def _has_tokenizer(path: str) -> bool:
    return not os.path.isdir(path) or any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)


def load_tokenizer(src: str, tokenizer: str | None):
    """SRC's tokenizer, or the one at ``tokenizer``; a clear error when there is none."""
    from transformers import AutoTokenizer

    path = tokenizer or src
    if not _has_tokenizer(path):
        hint = ("; pass tokenizer=PATH (the tokenizer the checkpoint was trained with, e.g. its Qwen2-VL base "
                "model's folder)") if tokenizer is None else ""
        raise ConversionError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}){hint}")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConversionError(f"cannot load a tokenizer from {path}: {e}") from e


def check_tokens(tokenizer, config, tokenizer_path: str) -> None:
    """The tokenizer must name the vision tokens with the ids the model's config expects, within its vocabulary:
    otherwise the model finds no marker in the processor's prompts."""
    vocab = config.get_text_config().vocab_size
    if len(tokenizer) > vocab:
        raise ConversionError(f"tokenizer {tokenizer_path} has {len(tokenizer)} tokens, the model's vocabulary "
                              f"{vocab}: not this model's tokenizer")
    for token, key in (("<|vision_start|>", "vision_start_token_id"), ("<|vision_end|>", "vision_end_token_id")):
        got, want = tokenizer.convert_tokens_to_ids(token), getattr(config, key, None)
        if want is not None and got != want:
            raise ConversionError(f"tokenizer {tokenizer_path} has {token} = {got}, the model's config.json "
                                  f"{key} = {want}: not this model's tokenizer")


def _overlap(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are the same folder or one holds the other (after resolving links)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _replaceable(dst: Path) -> str | None:
    """Why DST may not be replaced by ``overwrite=true``, or None: only a checkpoint this command (or ``save_pretrained``
    of a VAMBA model) wrote, i.e. a folder whose config.json says ``model_type: vamba``. Anything else may be the
    user's (a data folder, a home directory given by mistake) and replacing it would delete it whole."""
    if not dst.is_dir() or dst.is_symlink():
        return "it is not a folder"
    try:
        model_type = json.loads((dst / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    names = sorted(p.name for p in dst.iterdir())
    if model_type != "vamba" and names:  # (an empty folder holds nothing to lose)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        return (f"it does not look like a converted VAMBA checkpoint (no config.json with model_type vamba); it holds: "
                f"{shown}")
    return None


def check_destination(src: str, dst: Path, overwrite: bool, tokenizer: str | None = None) -> None:
    """Refuse, before anything is loaded or written, a DST that would destroy an input or a folder that is not ours:
    DST equal to SRC (or the tokenizer folder), holding it or inside it (replacing DST would delete SRC, and the
    temporary folder beside DST would land inside SRC), and an existing DST without ``overwrite=true`` or that is not a
    VAMBA checkpoint."""
    for name, path in (("SRC", src), ("the tokenizer folder", tokenizer)):
        if path is not None and os.path.isdir(path) and _overlap(Path(path), dst):
            raise ConversionError(f"DST {dst} and {name} {path} are the same folder or one holds the other: choose "
                                  f"a DST outside {name}")
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise ConversionError(f"{dst} exists; pass overwrite=true to replace it")
        reason = _replaceable(dst)
        if reason is not None:
            raise ConversionError(f"overwrite=true refuses to replace {dst}: {reason}")


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
            overwrite: bool = False, dtype: str = "auto", **settings: Any) -> Converted:
    """Write SRC as a ``vamba`` checkpoint with its processor at DST (module docstring). ``settings``: any of
    ``VambaVideoProcessor.SETTINGS`` (None values are ignored). ``dtype``: ``auto`` keeps SRC's."""
    from vamba.models import VambaForConditionalGeneration
    from vamba.models.loading import checkpoint_kind

    src, dst = _local_source(os.fspath(src)), Path(dst)
    tokenizer = os.fspath(tokenizer) if tokenizer is not None else None
    check_destination(src, dst, overwrite, tokenizer)
    if dtype != "auto" and dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose auto or one of {sorted(DTYPES)}")
    kind = checkpoint_kind(_config_dict(src))
    tok = load_tokenizer(src, tokenizer)
    settings = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(settings) - set(VambaVideoProcessor.SETTINGS))
    if unknown:
        raise ConversionError(f"unknown processor setting(s) {unknown}")
    source = src
    if read_processor_dicts(src)[2] is None and tokenizer is not None and read_processor_dicts(tokenizer)[2]:
        source = tokenizer  # e.g. the Qwen2-VL base folder given for its tokenizer also holds its image processor
    found = read_processor_dicts(source)[2]
    video = VambaVideoProcessor.from_pretrained(source, **settings)
    processor = build_processor(tok, video.vision_config(), video.frame_sampling())

    model = VambaForConditionalGeneration.from_pretrained(src, dtype="auto" if dtype == "auto" else DTYPES[dtype])
    check_tokens(tok, model.config, tokenizer or src)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.converting."))
    chmod_like_created(tmp, directory=True)  # mkdtemp's 0700 would make the checkpoint private whatever the umask
    try:
        model.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
        if dst.exists() or dst.is_symlink():  # overwrite=true: the old DST goes only once the new one is complete
            check_destination(src, dst, overwrite, tokenizer)  # again: DST may have changed while we converted
            # Two renames, not one exchange: killed between them, the old checkpoint is still whole in .DST.old.*
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old."))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    given = f", overridden by {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}" if settings else ""
    return Converted(dst, kind, (found or "defaults (no processor file in SRC)") + given)


@dataclass
class ConvertConfig:
    src: str  # checkpoint folder or hub id (local Hugging Face cache): released VAMBA, Qwen2-VL, ours
    out: str  # output folder (written to a temporary folder beside it, then renamed)
    tokenizer: str | None = None  # take the tokenizer (and, if SRC has none, the processor settings) from here
    overwrite: bool = False  # replace an existing out folder
    dtype: str = "auto"  # auto (keep SRC's: a conversion computes nothing) | bfloat16 | float16 | float32
    num_frames: int | None = None  # processor default: frames read (with fps: the cap)
    fps: float | None = None  # processor default: read frames at this rate
    min_pixels: int | None = None  # processor default: smart-resize floor
    max_pixels: int | None = None  # processor default: smart-resize cap
    shortest_edge: int | None = None  # VAMBA pre-resize: raise sides to this
    longest_edge: int | None = None  # VAMBA pre-resize: cap the long side


def parse(argv: list[str]) -> ConvertConfig:
    return parse_args(ConvertConfig, argv, prog="vamba convert", doc=__doc__ or "", positional=("src", "out"),
                      deprecated={"dst": "out", "out_dir": "out", "frames": "num_frames"})


def main(argv: list[str]) -> int:
    args = parse(argv)
    from vamba.models.loading import IncompatibleCheckpointError

    try:
        done = convert(args.src, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite, dtype=args.dtype,
                       num_frames=args.num_frames, fps=args.fps, min_pixels=args.min_pixels,
                       max_pixels=args.max_pixels, shortest_edge=args.shortest_edge, longest_edge=args.longest_edge)
    except (ConversionError, IncompatibleCheckpointError, FileNotFoundError, ValueError) as e:
        print(f"vamba convert: {e}", file=sys.stderr)
        return 2
    print(f"wrote {done.path} (model_type vamba, from a {done.kind} checkpoint; processor settings: {done.settings})")
    return 0
