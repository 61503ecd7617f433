"""``vamba train experiment=ablation_<name>``: a paper ablation at full scale, on one's own model, data and benchmark.

Every arm (``ablation.arms``: named by its setting, e.g. ``vision_mixer=none``) runs for every seed through
ordinary commands, each a step of its own:

    pretrain        vamba train experiment=paper_pretrain model.path=<ablation.model> data.mixture=<pretrain_data> ...
    eval_pretrain   vamba eval benchmark=<benchmark> data=<benchmark_data> model.path=<run>/pretrain/final ...
    sft             vamba train experiment=paper_sft model.path=<run>/pretrain/final data.mixture=<sft_data> ...
    eval_sft        vamba eval ... model.path=<run>/sft/final

(``sft`` only when ``ablation.stages`` has it, an evaluation after each stage in ``ablation.evaluate``). A step that finishes writes
``<run>/<step>.done``; a step whose marker exists is skipped, so the same command (or script) continues a stopped
pipeline, and an interrupted step resumes on its own (``vamba train``'s ``resume=auto``, ``vamba eval``'s records).
``ablation.launcher`` decides who runs the steps:

- ``local``: this process, one step after the other (``python -m vamba.cli ...``), then the report;
- ``torchrun``: writes ``launch/torchrun.sh`` (every arm x seed on this node, ``ablation.gpus`` processes a step,
  then the report; ``bash torchrun.sh ARM [SEED]`` runs one arm, e.g. on a node of its own);
- ``slurm``: writes ``launch/slurm_array.sbatch`` (an array job, one task per arm x seed, each a torchrun over
  ``ablation.nodes`` nodes) and ``launch/submit_slurm.sh`` (submits it, and the report once every task ended).

The report (``ablation.step=report``) reads every finished evaluation (``<run>/eval/<stage>/``, as ``vamba compare``
reads them), judges each claim with the miniature's machinery (``vamba.recipes.ablation_report.compare``:
paired over seeds and questions, ``vamba.evaluation.stats.judge_paired``) and writes ``report.json`` and
``report.md``.

    output_dir/plan.json                                   every step: arm, seed, command, marker
    output_dir/launch/                                     the scripts of torchrun / slurm
    output_dir/runs/<arm>/seed<k>/{pretrain,sft}/          the stages' run directories (final/: the model)
    output_dir/runs/<arm>/seed<k>/eval/{pretrain,sft}/     the evaluations (responses.jsonl, summary.json)
    output_dir/report.json, report.md                      the claims and the accuracy per arm

The pipeline itself is one process that launches the steps: under torchrun every rank would run its own pipeline
(as every rank of a Hydra ``-m`` sweep runs its own sweep), so it refuses to start there.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vamba.evaluation.compare import load_run
from vamba.evaluation.stats import bootstrap_mean
from vamba.recipes import ablation_report as report_lib
from vamba.recipes.config import PipelineTrainConfig, validate_pipeline
from vamba.training.config import ConfigError
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.logging import get_logger

logger = get_logger(__name__)
# keys of the command line the pipeline itself reads; every other key belongs to a stage's command
OWN_KEYS = ("ablation.", "+ablation.", "~ablation.", "++ablation.", "output_dir=", "experiment=", "hydra.")
# keys the pipeline sets in each step's command (an arm setting one would be overridden or duplicated)
PIPELINE_KEYS = ("output_dir", "seed", "model.path", "data.mixture")


@dataclass(frozen=True)
class Step:
    """One command of one arm x seed: ``argv`` is vamba's (``train ...`` or ``eval ...``); done when ``marker``
    exists."""

    arm: str
    seed: int
    name: str  # pretrain | eval_pretrain | sft | eval_sft
    argv: tuple[str, ...]
    marker: Path


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed{seed}"


def hydra_value(value: object) -> str:
    """A value quoted for a Hydra override: an arm's folder has '=' in its name, which Hydra's grammar refuses
    unquoted (``output_dir=runs/vision_mixer=none/seed0``)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan(cfg: PipelineTrainConfig, out: Path) -> list[list[Step]]:
    """Per arm x seed (seed-major: a stopped pipeline has every arm at its first seeds), its steps in order."""
    a = cfg.ablation
    for name, arm in a.arms.items():
        for override in [*arm.overrides, *arm.pretrain, *arm.sft]:
            if override.split("=", 1)[0].lstrip("+~") in PIPELINE_KEYS:
                raise ConfigError(f"ablation.arms[{name!r}]: {override!r} is set by the pipeline "
                                  f"({', '.join(PIPELINE_KEYS)}: ablation.model, ablation.*_data, ablation.seeds)")
    jobs = []
    for seed in a.seeds:
        for name, arm in a.arms.items():
            run = run_dir(out, name, seed)
            model, steps = a.model, []
            for stage in a.stages:
                experiment, data, args, own = ((a.pretrain_experiment, a.pretrain_data, a.pretrain_args, arm.pretrain)
                                               if stage == "pretrain" else
                                               (a.sft_experiment, a.sft_data, a.sft_args, arm.sft))
                steps.append(Step(name, seed, stage, (
                    "train", f"experiment={experiment}", f"model.path={hydra_value(model)}",
                    f"data.mixture={hydra_value(data)}", *args, *arm.overrides, *own, f"seed={seed}",
                    f"output_dir={hydra_value(run / stage)}"), run / f"{stage}.done"))
                model = str(run / stage / "final")
                if stage not in a.evaluate:
                    continue
                steps.append(Step(name, seed, f"eval_{stage}", (
                    "eval", f"benchmark={a.benchmark}", f"data={a.benchmark_data}", f"model.path={model}",
                    f"out={run / 'eval' / stage}", *a.eval_args), run / f"eval_{stage}.done"))
            jobs.append(steps)
    return jobs


def check_command_line(overrides: list[str]) -> None:
    """The pipeline reads ``ablation.*`` and ``output_dir`` only: any other key on its command line would silently
    not reach the stages, so it is an error naming where it goes."""
    stray = [o for o in overrides if not o.startswith(OWN_KEYS)]
    if stray:
        raise ConfigError(f"{' '.join(stray)}: the ablation pipeline passes no training key of its own command line "
                          "to the stages; put them in ablation.pretrain_args=[...] / ablation.sft_args=[...] (every "
                          "arm), an arm's overrides, or ablation.eval_args=[...] (docs/ablations.md, \"At full scale\")")


def run_local(jobs: list[list[Step]]) -> dict[str, str]:
    """Run every step not yet done, in order, each a ``python -m vamba.cli`` process. A failed step ends its
    arm x seed (the next steps need its output); the others go on. Returns ``arm/seed<k>`` -> why it failed."""
    failed = {}
    for steps in jobs:
        for step in steps:
            if step.marker.exists():
                continue
            command = [sys.executable, "-m", "vamba.cli", *step.argv]
            logger.info("ablation: %s/seed%d %s: %s", step.arm, step.seed, step.name, shell_join(command))
            code = subprocess.run(command, check=False).returncode
            if code != 0:
                failed[f"{step.arm}/seed{step.seed}"] = f"{step.name} exited with code {code}: {shell_join(command)}"
                logger.warning("ablation: %s", failed[f"{step.arm}/seed{step.seed}"])
                break
            step.marker.touch()
    return failed


_STEP_FUNCTION = """step() {  # step MARKER ARGS...: skipped when MARKER exists, MARKER written when the command succeeds
    local marker=$1
    shift
    if [[ -f $marker ]]; then
        echo "done already: $marker"
        return 0
    fi
    launch "$@"
    touch "$marker"
}"""


def shell_word(arg: str) -> str:
    """``arg`` as one shell word, readable: a Hydra-quoted value (``output_dir='runs/x=y/seed0'``) goes in double
    quotes rather than shlex's '"'"' chains, when nothing in it is special inside double quotes."""
    quoted = shlex.quote(arg)
    if quoted != arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return quoted


def shell_join(args: Iterable[str]) -> str:
    return " ".join(shell_word(a) for a in args)


def _steps_sh(steps: list[Step]) -> list[str]:
    return [f"    # {steps[0].arm} / seed {steps[0].seed}"] + [
        f"    step {shell_join([str(s.marker), *s.argv])}" for s in steps]


def _header(report: str, usage: list[str]) -> list[str]:
    return ["#!/usr/bin/env bash", "# Written by vamba/recipes/ablation_pipeline.py (do not edit: rerun the planning "
            "command instead).", *[f"# {line}" for line in usage],
            "# Rerun to continue: a step whose marker (<run>/<step>.done) exists is skipped; an interrupted one resumes.",
            f"# The report (the claims' verdicts from every finished evaluation): {report}",
            "set -euo pipefail", f"cd {shlex.quote(os.getcwd())}", f"PYTHON=${{PYTHON:-{shlex.quote(sys.executable)}}}"]


def write_torchrun(jobs: list[list[Step]], out: Path, gpus: int, report: str) -> Path:
    """``launch/torchrun.sh``: every arm x seed on this node then the report, or (``bash torchrun.sh ARM [SEED]``)
    one arm, e.g. one per node; ``GPUS`` (default ``ablation.gpus``) processes per step."""
    lines = _header(report, ["bash torchrun.sh              every arm and seed in turn, then the report",
                             "bash torchrun.sh ARM [SEED]   one arm (every seed, or one): run arms on nodes of their "
                             "own, then the report"])
    lines += ['ARM=${1:-}', 'SEED=${2:-}', f"GPUS=${{GPUS:-{gpus}}}",
              'launch() { "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m vamba.cli "$@"; }',
              _STEP_FUNCTION,
              'want() { [[ ( -z $ARM || $ARM == "$1" ) && ( -z $SEED || $SEED == "$2" ) ]]; }']
    for steps in jobs:
        lines += [f"if want {shlex.quote(steps[0].arm)} {steps[0].seed}; then", *_steps_sh(steps), "fi"]
    lines += ['if [[ -z $ARM ]]; then', f"    {report}", "fi", ""]
    path = out / "launch" / "torchrun.sh"
    atomic_write_text(path, "\n".join(lines))
    path.chmod(0o755)
    return path


def write_slurm(jobs: list[list[Step]], out: Path, gpus: int, nodes: int, report: str, name: str) -> Path:
    """``launch/slurm_array.sbatch`` (task i = the i-th arm x seed, a torchrun over ``nodes`` nodes per step, as
    scripts/launch/slurm.sbatch) and ``launch/submit_slurm.sh`` (the array, then the report after every task)."""
    launch_dir = out / "launch"
    lines = _header(report, ["bash submit_slurm.sh   (or: sbatch slurm_array.sbatch, then the report below)",
                             "Partition, account, time limit: SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT"])
    lines[1:1] = [f"#SBATCH --job-name=vamba-{name}", f"#SBATCH --array=0-{len(jobs) - 1}",
                  f"#SBATCH --nodes={nodes}", f"#SBATCH --gpus-per-node={gpus}", "#SBATCH --ntasks-per-node=1",
                  "#SBATCH --exclusive", f"#SBATCH --output={launch_dir}/slurm-%A_%a.out"]
    lines += ['gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-1}}', 'gpus=${gpus##*:}   # "h100:8" -> "8"',
              'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              'port=${VAMBA_MASTER_PORT:-29500}', 'n=0',
              'launch() {  # one rendezvous per step',
              '    n=$((n + 1))',
              '    srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run --nnodes "$SLURM_JOB_NUM_NODES" '
              '--nproc_per_node "$gpus" --rdzv_id "$SLURM_JOB_ID-$n" --rdzv_backend c10d --rdzv_endpoint "$head:$port" '
              '-m vamba.cli "$@"', '}', _STEP_FUNCTION, 'case "$SLURM_ARRAY_TASK_ID" in']
    for i, steps in enumerate(jobs):
        lines += [f"  {i})", *_steps_sh(steps), "    ;;"]
    lines += ['  *) echo "no arm x seed for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
    sbatch = launch_dir / "slurm_array.sbatch"
    atomic_write_text(sbatch, "\n".join(lines))
    submit = ["#!/usr/bin/env bash", "# Submit the array job, then the report once every task has ended (afterany: "
              "the report lists what did not finish).", "set -euo pipefail",
              f"export PYTHON=${{PYTHON:-{shlex.quote(sys.executable)}}}  # sbatch passes the environment on",
              f"array=$(sbatch --parsable {shlex.quote(str(sbatch))})", 'array=${array%%;*}',
              f"sbatch --dependency=afterany:$array --job-name=vamba-{name}-report "
              f"--output={shlex.quote(str(launch_dir))}/slurm-report-%j.out --wrap {shlex.quote(f'cd {shlex.quote(os.getcwd())} && {report}')}",
              'echo "submitted array job $array and its report"', ""]
    path = launch_dir / "submit_slurm.sh"
    atomic_write_text(path, "\n".join(submit))
    path.chmod(0o755)
    return sbatch


def report_command(overrides: list[str], out: Path) -> str:
    """The command line of the report step: the planning command's, with ``ablation.step=report``."""
    keep = [o for o in overrides if not o.startswith(("ablation.step=", "ablation.launcher=", "output_dir="))]
    return shlex.join(["$PYTHON", "-m", "vamba.cli", "train", *keep, f"output_dir={out}",
                       "ablation.step=report"]).replace("'$PYTHON'", '"$PYTHON"')


def gather(cfg: PipelineTrainConfig, out: Path) -> tuple[dict[tuple[str, int], dict[str, Any]], list[str],
                                                         dict[str, np.ndarray], str, list[str]]:
    """Every finished evaluation as the miniature's results: ``(arm, seed) -> {"stages": {stage: {"correct":
    '1'/'0'/'.' per question, "accuracy"}}}``; the question ids (benchmark order), the groups of questions
    (overall and each ``meta.question_type``), the benchmark's name and the evaluations not finished."""
    a = cfg.ablation
    runs: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    missing, benchmarks = [], set()
    for seed in a.seeds:
        for arm in a.arms:
            for stage in a.evaluate:
                where = run_dir(out, arm, seed) / "eval" / stage
                if not (where / "summary.json").exists():
                    missing.append(f"{arm}/seed{seed}/{stage}")
                    continue
                benchmark, records = load_run(where)
                benchmarks.add(benchmark)
                runs[(arm, seed, stage)] = records
    if len(benchmarks) > 1:
        raise ConfigError(f"the evaluations in {out} are of different benchmarks: {sorted(benchmarks)}")
    qids: list[str] = []
    first: dict[str, dict[str, Any]] = {}
    for records in runs.values():  # benchmark order; a question only some runs answered still counts (as '.')
        for qid, record in records.items():
            if qid not in first:
                first[qid] = record
                qids.append(qid)
    groups: dict[str, list[int]] = {"overall": list(range(len(qids)))}
    for i, qid in enumerate(qids):
        types = first[qid].get("meta", {}).get("question_type") or []
        for t in [types] if isinstance(types, str) else types:
            groups.setdefault(str(t), []).append(i)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for (arm, seed, stage), records in runs.items():
        correct = "".join("." if q not in records else "1" if records[q]["correct"] else "0" for q in qids)
        answered = len(correct) - correct.count(".")
        results.setdefault((arm, seed), {"stages": {}})["stages"][stage] = {
            "correct": correct, "accuracy": 100 * correct.count("1") / answered if answered else 0.0}
    return (results, qids, {g: np.array(c, dtype=np.int64) for g, c in groups.items()},
            benchmarks.pop() if benchmarks else a.benchmark, missing)


def report(cfg: PipelineTrainConfig, out: Path) -> dict[str, Any]:
    """``report.json`` and ``report.md``: the claims at each stage (overall and per question type) and each arm's
    accuracy, from the evaluations finished so far."""
    a = cfg.ablation
    results, qids, columns, benchmark, missing = gather(cfg, out)
    arms: dict[str, Any] = {}
    for name, arm in a.arms.items():
        row: dict[str, Any] = {"overrides": asdict(arm), "stages": {}}
        for stage in a.evaluate:
            seeds = sorted(s for (n, s), r in results.items() if n == name and stage in r["stages"])
            if not seeds:
                continue
            keys = [(name, s) for s in seeds]
            cols = columns["overall"][report_lib.answered(results, keys, stage, len(qids))]
            ci = (report_lib.interval_json(bootstrap_mean(report_lib.grid(results, name, stage, seeds, cols),
                                                      resamples=a.resamples)) if len(cols) else None)
            row["stages"][stage] = {"seeds": seeds, "accuracy": report_lib.mean_std(
                [results[k]["stages"][stage]["accuracy"] for k in keys]), "per_seed": {
                str(s): round(results[(name, s)]["stages"][stage]["accuracy"], 2) for s in seeds}, "ci": ci}
        arms[name] = row
    claims = report_lib.compare(list(a.claims), results, columns, a.resamples)
    summary = {"benchmark": benchmark, "questions": len(qids),
               "groups": {g: int(len(c)) for g, c in columns.items()}, "arms": arms, "claims": claims,
               "not_finished": missing, "runs": {f"{n}/seed{s}": r for (n, s), r in sorted(results.items())}}
    atomic_write_json(out / "report.json", summary)
    markdown = render(summary, out.name)
    atomic_write_text(out / "report.md", markdown + "\n")
    print("\n" + markdown + f"\n\nreport: {out / 'report.md'}")
    return summary


def render(summary: dict[str, Any], title: str) -> str:
    lines = [f"## Ablation {title}: {summary['benchmark']}", "",
             f"{summary['questions']} questions; per arm and stage every seed's evaluation, paired by question.", ""]
    lines += report_lib.render_claims(summary["claims"], {})
    for stage, stage_title in report_lib.STAGE_TITLES.items():
        rows = {n: r["stages"][stage] for n, r in summary["arms"].items() if stage in r["stages"]}
        if not rows:
            continue
        lines += [f"### Accuracy (%) {stage_title}, mean ± std over seeds", "",
                  "| arm | seeds | accuracy | 95% CI (seeds and questions) | per seed |", "|---|---|---|---|---|"]
        for name, row in rows.items():
            ci = f"[{row['ci']['lo']:.1f}, {row['ci']['hi']:.1f}]" if row["ci"] else "-"
            per_seed = ", ".join(f"seed{s} {v:.1f}" for s, v in row["per_seed"].items())
            lines.append(f"| {name} | {len(row['seeds'])} | {report_lib.cell(row['accuracy'], len(row['seeds']))} "
                         f"| {ci} | {per_seed} |")
        lines.append("")
    if summary["not_finished"]:
        lines += ["Not finished yet (not in the tables; rerun the pipeline's command or script to continue): "
                  + ", ".join(summary["not_finished"])]
    return "\n".join(lines)


def run_pipeline(cfg: PipelineTrainConfig, overrides: list[str]) -> dict[str, Any]:
    """Plan every step; run them here (``local``) or write the scripts (``torchrun``, ``slurm``); report.
    ``overrides``: the command line that composed ``cfg`` (the scripts' report step repeats it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("the ablation pipeline runs as one process and launches torchrun for each step itself: "
                          "under torchrun every rank would run the whole pipeline. Run `vamba train "
                          "experiment=ablation_... ablation.launcher=torchrun` without torchrun (docs/ablations.md)")
    check_command_line(overrides)
    validate_pipeline(cfg)
    a = cfg.ablation
    out = Path(cfg.output_dir).resolve()
    if a.step == "report":
        return report(cfg, out)
    jobs = plan(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", {"overrides": overrides, "launcher": a.launcher, "steps": [
        {"arm": s.arm, "seed": s.seed, "step": s.name, "argv": list(s.argv), "marker": str(s.marker),
         "done": s.marker.exists()} for steps in jobs for s in steps]})
    command = report_command(overrides, out)
    if a.launcher == "torchrun":
        path = write_torchrun(jobs, out, a.gpus, command)
        print(f"vamba train: wrote {path} ({len(jobs)} arm x seed jobs); run `bash {path}` on a node with "
              f"{a.gpus} GPUs (or `bash {path} ARM` per arm), rerun it to continue")
        return {"script": str(path)}
    if a.launcher == "slurm":
        path = write_slurm(jobs, out, a.gpus, a.nodes, command, out.name)
        print(f"vamba train: wrote {path} ({len(jobs)} array tasks); submit with `bash {path.parent / 'submit_slurm.sh'}`"
              ", resubmit to continue")
        return {"script": str(path)}
    failed = run_local(jobs)
    summary = report(cfg, out)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} arm x seed jobs failed: "
                           + "; ".join(f"{k}: {v}" for k, v in failed.items())
                           + " (the same command continues: finished steps are skipped)")
    return summary
