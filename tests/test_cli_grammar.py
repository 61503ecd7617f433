"""One command-line grammar for every ``vamba`` command (docs/cli.md): ``--help`` lists each command's keys, a typo
names the closest key, the old spellings still parse (with a deprecation line), and every command the docs show
parses as written."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vamba.cli import COMMANDS
from vamba.cli import main as vamba_main
from vamba.utils.cli_args import ArgsError, help_text, parse_args

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    path: str | None = None  # where it is
    size: int = 2


@dataclass
class Schema:
    name: str  # required, no default
    count: int = 1  # how many
    ratio: float = 0.5
    flag: bool = False
    maybe: int | None = None
    items: list[int] = field(default_factory=lambda: [1, 2])
    choice: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)


def test_the_grammar_types_values_and_nests() -> None:
    cfg = parse_args(Schema, ["name=x", "count=3", "ratio=1e-3", "flag=yes", "maybe=None", "items=[4, 5]",
                              "choice=b", "inner.path=/p", "inner.size=7", "count=4"], prog="t")
    assert cfg == Schema("x", 4, 1e-3, True, None, [4, 5], "b", Inner("/p", 7))  # a later value wins
    assert parse_args(Schema, ["name=a=b", "items=6"], prog="t").name == "a=b"  # only the first = splits
    assert parse_args(Schema, ["name=x", "items=[]"], prog="t").items == []


@pytest.mark.parametrize("argv, message", [
    (["name=x", "cuont=2"], "unknown key cuont; did you mean count? valid keys: name count ratio flag maybe items "
                            "choice inner.*"),
    (["name=x", "inner.pth=2"], "unknown key inner.pth; did you mean inner.path? valid keys of inner: inner.path "
                                "inner.size"),
    (["name=x", "count=many"], "count expects int, got 'many'"),
    (["name=x", "flag=maybe"], "flag expects true or false, got 'maybe'"),
    (["name=x", "choice=c"], "choice='c': choose one of a, b"),
    (["name=x", "inner=3"], "inner is a group of keys: set inner.<key>=... (inner.path inner.size)"),
    (["count=2"], "required: name=... (--help lists every key)"),
    (["name=x", "stray"], "unexpected argument 'stray': write key=value"),
    (["name=x", "--count"], "--count needs a value (write count=VALUE)"),
])
def test_bad_arguments_are_one_clear_line(argv: list[str], message: str) -> None:
    with pytest.raises(ArgsError) as e:
        parse_args(Schema, argv, prog="t")
    assert str(e.value) == message


def test_old_flag_spellings_parse_with_a_deprecation_line(capsys: pytest.CaptureFixture) -> None:
    cfg = parse_args(Schema, ["--name", "x", "--cnt", "3", "--flag", "--items", "7", "8", "--ratio=0.25"],
                     prog="vamba t", deprecated={"cnt": "count"})
    assert cfg == Schema("x", 3, ratio=0.25, flag=True, items=[7, 8])
    err = capsys.readouterr().err.splitlines()
    assert err == ["vamba t: --name x is deprecated; write name=x", "vamba t: --cnt 3 is deprecated; write count=3",
                   "vamba t: --flag is deprecated; write flag=true", "vamba t: --items 7 8 is deprecated; write "
                   "items=7,8", "vamba t: --ratio=0.25 is deprecated; write ratio=0.25"]
    assert parse_args(Schema, ["name=x", "--no-flag"], prog="t").flag is False
    capsys.readouterr()
    assert parse_args(Schema, ["name=x", "cnt=5"], prog="t", deprecated={"cnt": "count"}).count == 5
    assert capsys.readouterr().err == "t: cnt=5 is deprecated; write count=5\n"


def test_help_lists_type_default_and_meaning() -> None:
    text = help_text(Schema, "vamba t")
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert rows["count"].split()[:3] == ["count", "int", "default"] and rows["count"].endswith("how many")
    assert "required" in rows["name"] and "{a,b}" in rows["choice"] and "list[int]" in rows["items"]
    assert rows["inner.path"].endswith("where it is")


# Every subcommand (and sub-subcommand) with keys its --help must list.
HELP = {
    ("eval",): ["benchmark", "num_frames", "model.max_pixels", "model.dtype"],
    ("chat",): ["model.path", "video", "num_frames", "do_sample"],
    ("convert",): ["src", "out", "num_frames", "max_pixels", "overwrite"],
    ("compare",): ["a", "b", "out", "resamples"],
    ("bench",): ["out", "num_frames", "scale", "points"],
    ("doctor",): ["json_only"],
    ("data",): ["synth", "stats"],
    ("data", "synth"): ["out", "num_videos", "tasks"],
    ("data", "stats"): ["mixture", "tokenizer", "num_frames"],
    ("train",): ["optim.lr", "data.num_frames", "output_dir", "config groups", "experiment", "demo.num_frames"],
    ("distill-cache",): ["model.path", "output_dir", "stage.distill.top_k"],
}


@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: tuple[str, ...], flag: str, capsys: pytest.CaptureFixture) -> None:
    assert vamba_main([*command, flag]) == 0
    out = capsys.readouterr().out
    for key in HELP[command]:
        assert re.search(rf"(^|\s){re.escape(key)}(\s|$)", out, flags=re.M), (command, key)


def test_help_covers_every_command() -> None:
    assert {c[0] for c in HELP} == set(COMMANDS)


@pytest.mark.parametrize("argv, message", [
    (["eval", "benchmark=lvbench", "num_frame=8"], "vamba eval: unknown key num_frame; did you mean num_frames?"),
    (["chat", "model.path=c", "video=v", "max_new_token=3"], "did you mean max_new_tokens?"),
    (["convert", "src=a", "out=b", "max_pixel=3"], "vamba convert: unknown key max_pixel; did you mean max_pixels?"),
    (["compare", "a=x", "b=y", "resample=3"], "did you mean resamples?"),
    (["bench", "num_frame=[2]"], "vamba bench: unknown key num_frame; did you mean num_frames?"),
    (["data", "synth", "num_video=2"], "did you mean num_videos?"),
    (["data", "stats", "mixture=m", "tokenizer=t", "text_budgt=3"], "did you mean text_budget?"),
    (["doctor", "json=1"], "did you mean json_only?"),
    (["train", "optim.lrr=1"], "vamba train: unknown key optim.lrr; did you mean optim.lr?"),
    (["distill-cache", "stage.distill.topk=8"], "did you mean stage.distill.top_k?"),
])
def test_a_typo_names_the_closest_key(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(argv) == 2
    assert message in capsys.readouterr().err


# The commands the docs show, by the module function that parses them (without running anything).
def _parsers():
    from vamba.bench.data_pipeline import DataPipelineArgs
    from vamba.bench.efficiency import parse as bench
    from vamba.data.cli import parse_stats, parse_synth
    from vamba.evaluation.cli import parse as eval_
    from vamba.evaluation.compare import parse as compare
    from vamba.inference.cli import parse as chat
    from vamba.inference.convert import parse as convert

    return {"eval": eval_, "chat": chat, "convert": convert, "compare": compare, "bench": bench,
            "data synth": parse_synth, "data stats": parse_stats,
            "bench_data": lambda argv: parse_args(DataPipelineArgs, argv, prog="bench_data.py"),
            "doctor": lambda argv: parse_args(
                __import__("vamba.doctor", fromlist=["DoctorArgs"]).DoctorArgs, argv, prog="vamba doctor")}


COMMAND = re.compile(r"(?:^|`|&& )(vamba (?:data synth|data stats|[a-z-]+)"
                     r"|python3? scripts/bench_(?:efficiency|data)\.py)(?=[ `]|$)(.*)")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, command, arguments) of every ``vamba <command> ...`` line of README.md, docs/, configs/, scripts/ and
    the modules' docstrings; a line ending in a backslash continues on the next. Left out on purpose: transcripts
    (``$ vamba ...`` followed by what it printed: they show errors and deprecation lines) and docs/cli.md's section
    on the earlier spellings."""
    found = []
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").rglob("*.yaml")),
             *sorted((ROOT / "scripts").rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.sh")),
             *sorted((ROOT / "vamba").rglob("*.py"))]
    for path in files:
        text = path.read_text()
        if path.name == "cli.md":
            start = text.index("## Earlier spellings")
            text = text[:start] + text[text.index("\n## ", start + 1):]
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            match = COMMAND.search(line)
            if not match or line.lstrip().startswith("$ "):
                continue
            command = ("bench" if "bench_efficiency" in match.group(1) else "bench_data" if "bench_data" in
                       match.group(1) else match.group(1).removeprefix("vamba "))
            rest = match.group(2).split("`")[0] if "`" in line[:match.start(1) + 1] else match.group(2)
            rest = rest.replace('"$', '"X').replace("${", "{")  # shell variables: any value of the right shape
            try:
                argv = shlex.split(rest, comments=True)
            except ValueError:
                continue
            argv = [a for a in argv if a not in ("...", ">", ">>", "2>&1") and not a.startswith(("$", ">", "{"))]
            if any(a in ("|", "&&", ";") for a in argv):
                argv = argv[:min(argv.index(a) for a in ("|", "&&", ";") if a in argv)]
            found.append((f"{path.relative_to(ROOT)}:{i}", command, argv))
    return found


def test_the_docs_show_commands_of_every_kind() -> None:
    kinds = {command for _, command, _ in documented_commands()}
    assert {"eval", "chat", "convert", "compare", "bench", "data synth", "data stats", "train"} <= kinds


def test_every_documented_command_parses_in_the_current_spelling(capsys: pytest.CaptureFixture) -> None:
    from vamba.recipes import RECIPES
    from vamba.training.cli import CONFIG_DIR
    from vamba.training.overrides import check

    parsers = _parsers()
    schemas = {name: recipe.schema for name, recipe in RECIPES.items()}
    checked = 0
    for where, command, argv in documented_commands():
        if command in ("train", "distill-cache"):
            check([a for a in argv if a not in ("-m", "--cfg", "job")], command, CONFIG_DIR, schemas)
        elif command in parsers:
            if any(a in ("-h", "--help") for a in argv):
                continue
            try:
                parsers[command](argv)
            except ArgsError as e:
                if not str(e).startswith("required:"):  # a fragment (`vamba eval ... model.path=`) names no more
                    raise AssertionError(f"{where}: vamba {command} {' '.join(argv)}: {e}") from None
        else:
            continue
        err = capsys.readouterr().err
        assert "deprecated" not in err, f"{where}: {command} {argv}: {err}"
        checked += 1
    assert checked >= 30


def test_console_entry_end_to_end() -> None:
    """One subprocess: ``python -m vamba.cli data stats --help`` (a sub-subcommand's help) exits 0 and lists keys."""
    done = subprocess.run([sys.executable, "-m", "vamba.cli", "data", "stats", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0 and "mixture" in done.stdout and "text_budget" in done.stdout


def test_doctor_verdict_names_what_is_missing_and_the_next_step() -> None:
    from vamba.doctor import verdict

    versions = {"torch": "2", "transformers": "5", "hydra-core": "1", "accelerate": "1", "av": "18", "deepspeed": "0"}
    assert verdict({"versions": versions, "devices": []}) == (
        "ready for CPU tests and the CPU demo (no CUDA GPU: GPU training and the fast kernels need one)",
        "vamba train experiment=demo")
    line, step = verdict({"versions": {**versions, "av": None}, "devices": []})
    assert line == "NOT READY: missing decord or av (video decoding)" and step == 'pip install -e ".[dev]"'
    gpu = {"versions": versions, "devices": ["H100"], "kernels": {"causal_conv1d": "ModuleNotFoundError"}}
    assert verdict(gpu)[1] == 'pip install -e ".[kernels]"' and "causal_conv1d" in verdict(gpu)[0]
    assert verdict({**gpu, "versions": {**versions, "deepspeed": None}})[1] == 'pip install -e ".[train]"'
    assert verdict({**gpu, "kernels": {"causal_conv1d": "ok"}})[0] == "ready for GPU training (fast kernels available)"


def test_doctor_ends_with_the_verdict(capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(["doctor"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert last[0].startswith("verdict: ") and last[1].startswith("next: ")
