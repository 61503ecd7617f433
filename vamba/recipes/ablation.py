"""``vamba train experiment=mini_ablations``: the paper's ablations in miniature, on the demo's pipeline.

Every variant is the demo's VAMBA recipe (convert the teacher -> stage 1 with distillation -> stage 2) with a
few overrides of this config (``ablation.variants``: name -> list of ``key=value``), repeated for each of
``ablation.seeds`` (the seed draws the new modules' initial weights and the data order). Each run is evaluated
on the held-out synthetic benchmark twice: after stage 1 (the language model still frozen, as the paper's
pretraining leaves it) and after stage 2. All runs share one data set and one teacher, made once in
``output_dir/shared``, and answer the same questions, so two variants are compared question by question
(``ablation.claims``, ``vamba.recipes.ablation_report``).

    output_dir/shared/{data,teacher,teacher_eval}    the demo's data and teacher, its accuracy
    output_dir/runs/<variant>/seed<k>/               one run: pretrain/, sft/, eval/{pretrain,sft}/, result.json
                                                     (worker.json: the process running it; error.txt: why it failed)
    output_dir/ablation.json, ablation.md, loss.png, accuracy.png  per variant and stage, the claims

Each run is a process of its own (spawned; ``ablation.workers`` at a time). A run that raises leaves
``error.txt``; a process that dies without a word (the kernel's out-of-memory killer sends SIGKILL) is noticed
when its process ends and recorded the same way; the sweep goes on either way and reports the failures at
the end. A run whose ``result.json`` exists is not run again, so the same command continues a stopped sweep and
retries the failed runs (a retried stage resumes from its last checkpoint).
Scaling up: the same variants apply to ``vamba train`` runs on real models and data (model=vamba_qwen2vl_7b,
data.mixture=..., experiment=paper_pretrain); this module only drives the CPU miniature.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import json
import multiprocessing
import os
import resource
import signal
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterator

import torch

from vamba.recipes import demo
from vamba.recipes.config import AblationTrainConfig, validate_ablation
from vamba.training.config import ConfigError
from vamba.utils.io import atomic_write_json, atomic_write_text, read_jsonl
from vamba.utils.logging import get_logger

logger = get_logger(__name__)
STAGES = ("pretrain", "sft")  # each run is evaluated after both


def variant_configs(cfg: AblationTrainConfig) -> dict[tuple[str, int], AblationTrainConfig]:
    """(variant, seed) -> the run's config. Every override must name an existing key with a value of its
    type: a typo fails here, before anything runs."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not cfg.ablation.variants or not cfg.ablation.seeds:
        raise ConfigError("ablation.variants and ablation.seeds must not be empty")
    base = OmegaConf.structured(copy.deepcopy(cfg))
    configs = {}
    for name, overrides in cfg.ablation.variants.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"ablation variant {name!r}: use letters, digits, '_' and '-' (it names a folder)")
        for override in overrides:
            key = override.split("=", 1)[0]
            if "=" not in override or OmegaConf.select(base, key, default="<missing>") == "<missing>":
                raise ConfigError(f"ablation variant {name!r}: {override!r} is not key=value of an existing key")
        try:
            merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as e:
            raise ConfigError(f"ablation variant {name!r}: {e}") from None
        for seed in cfg.ablation.seeds:
            run = OmegaConf.to_object(merged)
            run.seed = seed
            configs[(name, seed)] = run
    return configs


@dataclass
class Job:
    """One (variant, seed) run: its config, the shared data and teacher, its directory."""

    name: str
    seed: int
    cfg: AblationTrainConfig
    data: dict[str, Path]
    teacher: Path
    out: Path


def _shared(cfg: AblationTrainConfig, shared: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The data set, the teacher and the teacher's accuracy, each made once (skipped when present)."""
    torch.set_num_threads(cfg.demo.threads)
    data = demo.write_data(cfg, shared / "data")
    teacher = demo.train_teacher(cfg, data, shared / "teacher")
    if not (shared / "teacher_result.json").exists():
        result = demo.evaluate_model(cfg, data, teacher, shared / "teacher_eval", teacher=True)
        result["tasks"] = demo.task_accuracy(result)
        atomic_write_json(shared / "teacher_result.json", result)
    return data, json.loads((shared / "teacher_result.json").read_text())


def is_done(out: Path) -> bool:
    """A run is done when its ``result.json`` holds every stage's evaluation (one written by the sweep before
    stage-1 evaluation existed is not: that run is evaluated again, its training kept)."""
    path = out / "result.json"
    return path.exists() and set(STAGES) <= set(json.loads(path.read_text()).get("stages", {}))


def _worker(job: Job) -> None:
    """A run's process: announce itself in ``worker.json``, train and evaluate, or leave ``error.txt``."""
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / "error.txt").unlink(missing_ok=True)  # a retry: the last attempt's error no longer holds
    atomic_write_json(job.out / "worker.json", {"pid": os.getpid(), "started": _now()})
    try:
        train_and_evaluate(job)
    except Exception:  # noqa: BLE001 - recorded per run, reported by run_ablation: one broken run must not stop others
        atomic_write_text(job.out / "error.txt", traceback.format_exc())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def train_and_evaluate(job: Job) -> dict[str, Any]:
    """Both stages (each skipped when its final checkpoint exists), then the held-out benchmark after each."""
    cfg, out = job.cfg, job.out
    torch.set_num_threads(cfg.demo.threads)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    demo.train_vamba(cfg, job.data, job.teacher, out, lap)
    gc.collect()  # the stages' sample caches
    qids = [q.qid for q in demo.held_out_questions(cfg, job.data)]
    stages = {}
    for stage in STAGES:
        result = demo.evaluate_model(cfg, job.data, out / stage / "final", out / "eval" / stage)
        lap(f"eval_{stage}")
        stages[stage] = {"accuracy": result["accuracy"], "answered": result["answered"],
                         "tasks": demo.task_accuracy(result), "correct": _correct(out / "eval" / stage, qids)}
    result = {"stages": stages, "loss": {stage: _losses(out / stage / "log.jsonl") for stage in STAGES},
              "seconds": seconds, "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "finished": _now()}
    atomic_write_json(out / "result.json", result)
    return result


def _correct(run_dir: Path, qids: list[str]) -> str:
    """Per question in benchmark order: '1' right, '0' wrong, '.' not answered (its video was skipped)."""
    answered = {r["qid"]: r["correct"] for r in read_jsonl(run_dir / "responses.jsonl")}
    return "".join("." if q not in answered else "1" if answered[q] else "0" for q in qids)


def _losses(log: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]


def _ended_without_result(job: Job, process: multiprocessing.Process) -> str | None:
    """Why a finished run's process left no result (None: it did). A process that died (a signal, a non-zero
    exit) wrote nothing about it: its ``error.txt`` is written here."""
    if is_done(job.out):
        return None
    error = job.out / "error.txt"
    if process.exitcode == 0 and error.exists():
        return error.read_text().strip().splitlines()[-1][:500]
    if process.exitcode is not None and process.exitcode < 0:
        sig = signal.Signals(-process.exitcode).name
        why = (f"worker process {process.pid} was killed by {sig} before it wrote result.json"
               + (" (the kernel's out-of-memory killer sends SIGKILL)" if sig == "SIGKILL" else ""))
    else:
        why = f"worker process {process.pid} exited with code {process.exitcode} without writing result.json"
    atomic_write_text(error, why + "\n")
    return why


@contextlib.contextmanager
def _child_malloc() -> Iterator[None]:
    """Processes started inside get glibc's mmap threshold fixed at 128 KiB (unless the caller set one): every
    large block, such as a cached sample's pixels, is then its own mapping and returns to the system when freed.
    With glibc's default, which raises the threshold as large blocks are freed, a worker's heap grew to about 3x
    the samples it caches (12 GiB per run at the sweep's sizes, 2026-12-02: two workers filled the 24 GiB
    machine); with it, the cache's own size (docs/ablations.md, "Cost")."""
    key = "MALLOC_MMAP_THRESHOLD_"
    before = os.environ.get(key)
    os.environ.setdefault(key, str(128 * 1024))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)


def run_jobs(jobs: list[Job], workers: int) -> dict[tuple[str, int], str]:
    """Run every job not yet done, each in a spawned process of its own, ``workers`` at a time, in order.
    Returns (variant, seed) -> why it failed, for the runs that did."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per run: no forked torch/OpenMP state
    todo = [job for job in jobs if not is_done(job.out)]
    running: dict[Any, tuple[multiprocessing.Process, Job]] = {}
    failed: dict[tuple[str, int], str] = {}
    try:
        while todo or running:
            while todo and len(running) < workers:
                job = todo.pop(0)
                process = ctx.Process(target=_worker, args=(job,), name=f"ablation-{job.name}-seed{job.seed}")
                process.start()
                running[process.sentinel] = (process, job)
            for sentinel in wait(list(running)):
                process, job = running.pop(sentinel)
                process.join()
                why = _ended_without_result(job, process)
                if why:
                    failed[(job.name, job.seed)] = why
                    logger.warning("ablation run %s/seed%d failed: %s", job.name, job.seed, why)
    finally:  # an interrupted sweep (Ctrl-C, an error here) takes its running workers with it
        for process, _ in running.values():
            process.kill()
            process.join()
    return failed


def check_ablation(cfg: AblationTrainConfig) -> dict[tuple[str, int], AblationTrainConfig]:
    """Every check before any work: the sweep's keys, each variant's overrides, and the stage configs each run will
    train with (demo.check_stages). Returns the runs' configs (``variant_configs``). Raises ``ConfigError``."""
    validate_ablation(cfg)
    configs = variant_configs(cfg)
    for config in configs.values():
        demo.check_stages(config)
    return configs


def run_ablation(cfg: AblationTrainConfig) -> dict[str, Any]:
    from vamba.recipes import ablation_report as report
    from vamba.training.run import write_run_info
    from vamba.utils.provenance import header

    configs = check_ablation(cfg)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(cfg, out)
    started = time.perf_counter()
    # The teacher trains in a child process: its in-memory sample cache (GBs at the demo's sizes) then dies
    # with it instead of staying in this process beside the workers'. (A killed child raises here.)
    with _child_malloc(), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        data, teacher_result = pool.submit(_shared, cfg, out / "shared").result()
    teacher = out / "shared" / "teacher"

    # seed-major order: a sweep stopped early has every variant at the first seeds
    order = sorted(configs, key=lambda k: (cfg.ablation.seeds.index(k[1]), list(cfg.ablation.variants).index(k[0])))
    jobs = [Job(name, seed, configs[(name, seed)], data, teacher, out / "runs" / name / f"seed{seed}")
            for name, seed in order]
    with _child_malloc():
        failed = run_jobs(jobs, cfg.ablation.workers)
    results = {(job.name, job.seed): json.loads((job.out / "result.json").read_text())
               for job in jobs if is_done(job.out)}

    questions = demo.held_out_questions(cfg, data)
    summary = {**header("cpu"),
               "sweep_seconds_this_call": round(time.perf_counter() - started, 1), "chance": demo.CHANCE,
               **report.summarize(cfg, results, teacher_result, questions),
               "failed": {f"{name}/seed{seed}": why for (name, seed), why in failed.items()}}
    atomic_write_json(out / "ablation.json", summary)
    markdown = report.render(summary, f"Miniature ablations ({out.name})")
    atomic_write_text(out / "ablation.md", markdown + "\n")
    report.plot_losses(summary["variants"], out / "loss.png")
    report.plot_accuracy(summary, out / "accuracy.png")
    print("\n" + markdown + f"\n\nrun directory: {out}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(configs)} ablation runs failed: "
                           f"{', '.join(summary['failed'])} (the others are aggregated in {out / 'ablation.md'}; "
                           "the same command retries the failed runs)")
    return summary
