"""The one command-line grammar of ``vamba``: ``key=value`` over a typed dataclass (docs/cli.md).

Every subcommand but ``train`` and ``distill-cache`` (which are Hydra, over the same kind of dataclasses) parses its
arguments here, so that each one accepts the same spellings and fails the same way:

- ``key=value`` for every field of the schema; ``a.b=value`` for a field of a nested dataclass;
- values are converted to the field's type: ``int``, ``float``, ``str``, ``bool`` (true/false/yes/no/on/off/1/0),
  ``None``/``null`` for an optional field, a ``Literal`` checks its choices, a list is ``[a,b]`` or ``a,b``;
- positional arguments only where a command names them (``vamba convert SRC OUT``), each also a key;
- an unknown key fails at once with the closest valid key and the list of valid keys;
- ``-h``/``--help`` prints every key with its type, default and meaning (the field's ``metadata["help"]``, else
  the comment on or above its line in the dataclass source, so the schemas document themselves once);
- the spellings of the old grammars (``--num-frames 8``, ``--sample``, ``frames=8``) still work, each with a
  deprecation line on stderr naming the key to write instead.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

T = TypeVar("T")

REQUIRED = "???"  # omegaconf.MISSING's value: a default that must be given on the command line
_KEY = re.compile(r"^[A-Za-z_][\w.]*$")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class ArgsError(ValueError):
    """Arguments that do not fit the schema (unknown key, wrong type, missing value): one line for the user."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One ``key=value`` a schema accepts: its dotted name, type, default (``REQUIRED`` if none) and meaning."""

    name: str
    type: Any
    default: Any
    help: str


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment at the end of its line, or else the comment lines right above it, in ``cls``'s
    source. The schemas were documented this way before this parser existed; reading the comments keeps one place
    for each key's meaning instead of copying it into ``metadata``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL or generated: no help text, still parseable
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        match = re.match(r"^\s+(\w+)\s*:", line)
        if not match or line.lstrip().startswith("#"):
            continue
        if number in comments:
            found.setdefault(match.group(1), comments[number])
            continue
        above = []
        n = number - 1
        while n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        if above:
            found.setdefault(match.group(1), " ".join(above))
    return found


def _helps(cls: type) -> dict[str, str]:
    merged: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(base):
            merged.update(field_comments(base))
    return merged


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def keys(schema: type, prefix: str = "") -> list[Key]:
    """Every key of ``schema`` (nested dataclasses flattened to ``a.b``), in field order."""
    hints = typing.get_type_hints(schema)
    helps = _helps(schema)
    out: list[Key] = []
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out += keys(tp, f"{prefix}{f.name}.")
            continue
        text = f.metadata.get("help") or helps.get(f.name, "")
        out.append(Key(prefix + f.name, tp, _default(f), text))
    return out


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple, Sequence):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "dict"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def help_text(schema: type, prog: str, doc: str = "", positional: Sequence[str] = (),
              deprecated: Mapping[str, str] | None = None) -> str:
    """The ``--help`` page: the command's description, then one line per key (type, default, meaning)."""
    usage = f"usage: {prog}" + "".join(f" [{p.upper()}]" for p in positional) + " [key=value ...]"
    lines = [usage, ""]
    if doc.strip():
        lines += [inspect.cleandoc(doc), ""]
    if positional:
        lines += ["positional arguments are the keys " + ", ".join(positional) + " in this order", ""]
    lines.append("keys (key=value; nested: a.b=value; lists: [a,b]; None: None):")
    lines += key_rows(keys(schema))
    if deprecated:
        old = ", ".join(f"{o} -> {n}" for o, n in deprecated.items())
        lines += ["", f"deprecated spellings (still accepted, with a deprecation line): {old}; any --flag-name VALUE -> "
                      "flag_name=VALUE"]
    return "\n".join(lines)


def key_rows(table: Sequence[Key]) -> list[str]:
    """One aligned line per key: name, type, default, meaning."""
    rows = [(k.name, type_name(k.type), "required" if k.default == REQUIRED else f"default {_show(k.default)}", k.help)
            for k in table]
    # a very long entry (a module path as default) would push every meaning far right: it overflows its column
    widths = [min(max((len(r[i]) for r in rows), default=0), cap) for i, cap in enumerate((34, 20, 24))]
    return [f"  {n:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {h}".rstrip() for n, t, d, h in rows]


def suggest(key: str, valid: Sequence[str]) -> str:
    """``unknown key optim.lrr; did you mean optim.lr? valid keys: ...`` (the keys of the same group when it
    exists, so the list stays short)."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    group = key.rpartition(".")[0]
    same_group = [k for k in valid if k.startswith(group + ".")] if group else []
    listed = same_group or [k for k in valid if "." not in k] + sorted({k.split(".")[0] + ".*" for k in valid
                                                                     if "." in k})
    return f"unknown key {key}{hint} valid keys{f' of {group}' if same_group else ''}: {' '.join(listed)}"


def convert(key: str, text: str, tp: Any) -> Any:
    """``text`` as a value of type ``tp`` (the field ``key``'s)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(key, text, arg)
            except ArgsError as e:
                errors.append(str(e))
        raise ArgsError(errors[0] if len(errors) == 1 else f"{key}={text!r} is not a {type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ArgsError(f"{key}={text!r}: choose one of {', '.join(map(str, args))}")
    if origin in (list, tuple, Sequence):
        inner = text.strip()
        if inner.startswith("[") and inner.endswith("]"):
            inner = inner[1:-1]
        items = [convert(key, t.strip(), args[0] if args else str) for t in inner.split(",") if t.strip()]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ArgsError(f"{key} expects true or false, got {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ArgsError(f"{key} expects {tp.__name__}, got {text!r}") from None
    if tp is str or tp is Any:
        return text
    raise ArgsError(f"{key}: type {type_name(tp)} cannot be given on the command line")


def _is_list(tp: Any) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    return any(typing.get_origin(a) in (list, tuple, Sequence) for a in args)


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in typing.get_args(tp))


def _deprecate(prog: str, old: str, new: str) -> None:
    # One line on stderr, as our errors are: a Python warning would print this module's file and line to a user
    # who only typed a command.
    print(f"{prog}: {old} is deprecated; write {new}", file=sys.stderr)


def _tokens(argv: Sequence[str], by_name: Mapping[str, Key], deprecated: Mapping[str, str],
            positional: Sequence[str], prog: str) -> list[tuple[str, str]]:
    """``argv`` -> ``(key, text)`` pairs in order; old ``--flag`` spellings and renamed keys are mapped (warned)."""
    pairs: list[tuple[str, str]] = []
    slots = list(positional)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if _is_flag(arg):
            start = i - 1
            flag, eq, value = arg.partition("=")
            name = flag.lstrip("-").replace("-", "_")
            negated = name.startswith("no_") and name not in by_name and name not in deprecated
            if negated:
                name = name[3:]
            key = deprecated.get(name, name)
            if key not in by_name:
                raise ArgsError(suggest(name, list(by_name)))
            tp = by_name[key].type
            if eq:
                text = value
            elif _is_bool(tp):
                text = "false" if negated else "true"
            elif _is_list(tp):
                items = []
                while i < len(argv) and not _is_flag(argv[i]) and not _is_pair(argv[i]):
                    items.append(argv[i])
                    i += 1
                text = ",".join(items)
            else:
                if i >= len(argv):
                    raise ArgsError(f"{flag} needs a value (write {key}=VALUE)")
                text = argv[i]
                i += 1
            _deprecate(prog, " ".join(argv[start:i]), f"{key}={text}")
            pairs.append((key, text))
            continue
        name, _, value = arg.partition("=")
        if _is_pair(arg):
            if name in deprecated:
                _deprecate(prog, arg, f"{deprecated[name]}={value}")
                name = deprecated[name]
            pairs.append((name, value))
            continue
        if not slots:
            raise ArgsError(f"unexpected argument {arg!r}: write key=value")
        key = slots[0]
        if _is_list(by_name[key].type):  # a list slot takes every bare argument up to the next key or flag
            items = [arg]
            while i < len(argv) and not _is_flag(argv[i]) and not _is_pair(argv[i]):
                items.append(argv[i])
                i += 1
            pairs.append((key, ",".join(items)))
        else:
            pairs.append((key, arg))
        slots.pop(0)
    return pairs


def _is_flag(arg: str) -> bool:
    """``--name``, ``--name=value`` or ``-i`` (the old argparse spellings); ``-3`` is a value."""
    if not arg.startswith("-") or len(arg) < 2:
        return False
    try:
        float(arg)
    except ValueError:
        return "=" not in arg or _KEY.match(arg.partition("=")[0].lstrip("-").replace("-", "_")) is not None
    return False


def _is_pair(arg: str) -> bool:
    """``key=value`` (``a.b=value``); a bare argument holding ``=`` after other text (a question) is not."""
    name, eq, _ = arg.partition("=")
    return bool(eq) and _KEY.match(name) is not None


def _build(schema: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for f in dataclasses.fields(schema):
        if _is_dataclass_type(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, f"{prefix}{f.name}.")
        elif prefix + f.name in values:
            kwargs[f.name] = values[prefix + f.name]
    return schema(**kwargs)


def parse_args(schema: type[T], argv: Sequence[str], *, prog: str, doc: str = "", positional: Sequence[str] = (),
               deprecated: Mapping[str, str] | None = None) -> T:
    """``argv`` -> an instance of ``schema``. ``--help`` prints :func:`help_text` and exits 0 (as argparse does);
    a bad argument raises :class:`ArgsError`. ``deprecated``: old key name (``frames``; a flag ``--frames`` is
    looked up as ``frames``) -> the key that replaced it. A later value of a key wins over an earlier one."""
    deprecated = dict(deprecated or {})
    if wants_help(argv):
        print(help_text(schema, prog, doc, positional, deprecated))
        raise SystemExit(0)
    table = keys(schema)
    by_name = {k.name: k for k in table}
    groups = {k.name.rsplit(".", 1)[0] for k in table if "." in k.name}
    values: dict[str, Any] = {}
    for key, text in _tokens(argv, by_name, deprecated, positional, prog):
        if key not in by_name:
            if key in groups:
                raise ArgsError(f"{key} is a group of keys: set {key}.<key>=... "
                                f"({' '.join(k for k in by_name if k.startswith(key + '.'))})")
            raise ArgsError(suggest(key, list(by_name)))
        values[key] = convert(key, text, by_name[key].type)
    missing = [k.name for k in table if k.default == REQUIRED and k.name not in values]
    if missing:
        raise ArgsError(f"required: {' '.join(m + '=...' for m in missing)} (--help lists every key)")
    return _build(schema, values)


def auto_dtype(dtype: str, device: str) -> str:
    """The dtype policy of every command that runs a model (docs/design.md, "Command line"): ``auto`` is bfloat16
    on a CUDA device and float32 elsewhere (CPUs compute bfloat16 slowly and less accurately)."""
    if dtype != "auto":
        return dtype
    if device == "auto":
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def print_error(prog: str, error: BaseException) -> int:
    print(f"{prog}: {error}", file=sys.stderr)
    return 2
