"""One training stage from a ``TrainConfig``: build, train (resuming if a checkpoint exists), save.

Run directory (``output_dir``)::

    config.yaml          the resolved config (every key, after all overrides)
    run_info.json        git commit, command line, versions and devices (vamba.utils.provenance), date, the start-up
                         summary; every invocation of the directory in ``invocations`` (vamba.training.observe)
    log.jsonl            every logged step (loss, lm_loss, distill_loss, lr, grad_norm, alpha/layer_i, ...)
    console.log          our log lines, transformers' warnings and each step's logs, appended per invocation
    loss.png             loss (and eval loss), learning rate and gradient norm over the steps (needs matplotlib)
    skips.jsonl          samples the data pipeline skipped, with the reason
    profile/             with debug.profile_steps: those steps' operator tables and traces (vamba.training.profiling)
    checkpoint-<step>/   HF Trainer checkpoints (model, optimizer, scheduler, RNG, data position) + processor,
                         complete or absent: written under .staging/ and renamed (vamba.training.checkpoints);
                         with fsdp also the Trainer's full-state files (pytorch_model_fsdp.bin, optimizer.bin)
    final/               the trained model (save_pretrained) and its processor (VambaProcessor: tokenizer, chat
                         template, the frames and resize settings training used; docs/model.md)
"""
from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import TrainerCallback, TrainingArguments

from vamba.models.presets import special_token_ids
from vamba.models.zero import is_zero3
from vamba.training import rundir
from vamba.training.build import (
    apply_lora,
    apply_stage,
    build_dataset,
    build_eval_dataset,
    build_model,
    load_teacher,
    load_tokenizer,
    training_processor,
)
from vamba.training.checkpoints import checkpoint_step, clean_staging, latest_checkpoint, truncate_log
from vamba.training.config import (
    ConfigError,
    TrainConfig,
    gradient_accumulation,
    has_validation,
    validate,
    wandb_key_known,
)
from vamba.training.observe import (
    ConsoleLogCallback,
    CurvesCallback,
    RunSummary,
    append_invocation,
    console_log,
    samples_per_source,
)
from vamba.training.params import LoraSummary, TrainableSummary
from vamba.training.profiling import StepProfiler
from vamba.training.resume_settings import check_resume_settings
from vamba.training.trainer import KeyedCollator, VambaTrainer
from vamba.utils.distributed import on_rank_zero
from vamba.utils.io import append_jsonl, atomic_write_text
from vamba.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    log_history: list[dict[str, Any]]  # the Trainer's logs of this process (steps of this invocation only)
    trainable: str  # the trainable-parameter summary


class JsonlLogger(TrainerCallback):
    """Append every log record (with its step) to ``log.jsonl`` on the main process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, **logs}])


def save_processor(processor, directory: Path) -> None:
    """``processor.save_pretrained(directory)`` through a temporary folder: no half-written file is ever there."""
    import shutil
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.processor."))
    try:
        processor.save_pretrained(str(tmp))
        for file in sorted(tmp.rglob("*")):
            if file.is_file():
                target = directory / file.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StopAfter(TrainerCallback):
    """``debug.stop_after_steps``: end the run after N optimizer steps with a checkpoint, as an interruption would."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True
        return control


class ScheduleOnResume(TrainerCallback):
    """A resumed run's learning rate, from this run's schedule at the step it resumes at. The checkpoint restores the
    optimizer's last learning rate, which the old schedule set: with ``optim.max_steps`` raised to train further,
    the first new step ran at the old schedule's end (0.0 after the cosine decay). Resumed with the same schedule the
    value is the one restored, so an exact resume stays exact."""

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if state.global_step == 0 or not hasattr(lr_scheduler, "lr_lambdas"):  # a LambdaLR: the Trainer's schedules
            return
        lrs = [base * f(lr_scheduler.last_epoch) for base, f in zip(lr_scheduler.base_lrs, lr_scheduler.lr_lambdas)]
        for group, lr in zip(lr_scheduler.optimizer.param_groups, lrs):
            group["lr"] = lr
        lr_scheduler._last_lr = lrs  # what the Trainer logs as the step's learning rate


class StallDump(TrainerCallback):
    """``debug.stall_dump_s``: a watchdog re-armed at every step's start and end, so that a step, or the logging and
    saving after it, that runs past ``seconds`` prints every thread's stack to stderr (again every ``seconds`` while
    it stays stuck).

    The watchdog is a Python thread that prints with ``faulthandler.dump_traceback`` while holding the GIL.
    ``faulthandler.dump_traceback_later``, used before, prints from a C thread without the GIL, which is unsafe while
    other threads start or end (CPython's ``_Py_DumpTracebackThreads``). With it, the pytest process died of SIGSEGV
    during the stall test or 1-3 tests after it, four times on 2026-12-07 (three CI runs, one of six loop runs; the
    cause is not proven). A Python thread can print only when the stuck thread releases the GIL. torch's collectives
    and CUDA synchronisation do, and so does ``time.sleep``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _arm(self) -> None:
        self._deadline = time.monotonic() + self.seconds
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="vamba-stall-dump", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(max(self._deadline - time.monotonic(), 0.0)):
            if time.monotonic() >= self._deadline:
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                self._deadline = time.monotonic() + self.seconds

    def stop(self) -> None:
        """End the watchdog (idempotent): after training, however it ends."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def on_train_begin(self, args, state, control, **kwargs):
        self._arm()

    def on_step_begin(self, args, state, control, **kwargs):
        self._arm()

    def on_step_end(self, args, state, control, **kwargs):
        self._arm()

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()


def write_run_info(cfg: TrainConfig, out: Path, resumed_from: str | None = None) -> None:
    """``config.yaml`` and this invocation's entry in ``run_info.json`` (``resumed_from``: the checkpoint it
    continues; earlier invocations of the same run directory are kept in ``invocations``)."""
    from vamba.utils.provenance import header

    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    entry = header("cpu" if _device_is_cpu(cfg) else "cuda")
    environment = entry.pop("environment")
    append_invocation(out, {
        **entry, "argv": sys.argv, "world_size": int(os.environ.get("WORLD_SIZE", 1)), "resumed_from": resumed_from,
        "resumed_from_step": None if resumed_from is None else checkpoint_step(resumed_from)}, environment)


def _device_is_cpu(cfg: TrainConfig) -> bool:
    return cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())


def training_arguments(cfg: TrainConfig, out: Path) -> TrainingArguments:
    o, lg = cfg.optim, cfg.logging
    world = int(os.environ.get("WORLD_SIZE", 1))
    report_to = list(lg.report_to) or "none"
    if "wandb" in lg.report_to:
        os.environ.setdefault("WANDB_PROJECT", lg.project)
        os.environ.setdefault("WANDB_DIR", str(out))
        os.environ.setdefault("WANDB_INIT_TIMEOUT", str(lg.wandb_init_timeout))  # fail, not hang, without network
        if not wandb_key_known() and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"  # no key (env or `wandb login`): log locally, `wandb sync` later
    if "tensorboard" in lg.report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
    deepspeed = cfg.deepspeed
    if deepspeed is not None and not isinstance(deepspeed, dict):
        deepspeed = OmegaConf.to_container(deepspeed, resolve=True)
    args = TrainingArguments(
        output_dir=str(out), run_name=out.name, seed=cfg.seed,
        per_device_train_batch_size=o.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(o, world, cfg.parallel.context_parallel_size),
        learning_rate=o.lr, weight_decay=o.weight_decay, lr_scheduler_type=o.scheduler, warmup_steps=o.warmup_ratio,
        adam_beta2=o.adam_beta2, max_steps=o.max_steps, num_train_epochs=o.epochs, max_grad_norm=o.max_grad_norm,
        bf16=o.bf16, tf32=o.tf32 if torch.cuda.is_available() and not _device_is_cpu(cfg) else None,
        logging_steps=lg.logging_steps, save_strategy="steps" if lg.save_steps > 0 else "no",
        save_steps=lg.save_steps or None, save_total_limit=lg.save_total_limit,
        report_to=report_to, disable_tqdm=not lg.progress, dataloader_num_workers=cfg.data.num_workers,
        eval_strategy="steps" if has_validation(cfg.data) else "no", eval_steps=lg.eval_steps or lg.save_steps or None,
        per_device_eval_batch_size=o.per_device_batch_size, prediction_loss_only=True,
        remove_unused_columns=False, use_cpu=_device_is_cpu(cfg), deepspeed=deepspeed,
        ddp_find_unused_parameters=False, ddp_timeout=cfg.parallel.ddp_timeout, **fsdp_arguments(cfg))
    if cfg.fsdp.enable and o.bf16:
        # bf16 compute, gradients reduced in float32 (accelerate would reduce them in bf16); float32 master weights
        args.fsdp_plugin_args["mixed_precision_policy"] = {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32}
    return args


# FSDP2 shard units: one per decoder layer and one for the vision tower. The tower's fast forward computes its
# blocks from their weights without calling them (vamba.models.vision), so its blocks cannot be units of their own
# (their gathering hooks would never run); gathered as one unit they are whole while the tower runs.
FSDP_UNITS = ["VambaDecoderLayer", "VambaVisionTower"]


def fsdp_arguments(cfg: TrainConfig) -> dict[str, Any]:
    """TrainingArguments' ``fsdp`` / ``fsdp_config`` for ``cfg.fsdp`` (none when disabled). Full state dicts: every
    checkpoint holds ``model.safetensors`` (rank 0 gathers it) and the Trainer's full optimizer state, loaded
    weights-only; DCP's sharded format unpickles its metadata without that check (docs/training.md)."""
    f = cfg.fsdp
    if not f.enable:
        return {}
    return {"fsdp": True, "fsdp_config": {
        "version": 2, "transformer_layer_cls_to_wrap": list(FSDP_UNITS),
        "reshard_after_forward": f.reshard_after_forward, "cpu_offload": f.cpu_offload,
        "state_dict_type": "FULL_STATE_DICT",
        # checkpointing is model.gradient_checkpointing (our layers checkpoint themselves), not FSDP's wrapper
        "activation_checkpointing": False}}


def resume_checkpoint(cfg: TrainConfig, out: Path) -> str | None:
    if cfg.resume in ("never", "replace"):
        return None
    if cfg.resume == "auto":
        latest = latest_checkpoint(out)
        return None if latest is None else str(latest)
    return cfg.resume


def finished_step(cfg: TrainConfig, resume: str | None) -> int | None:
    """The step of ``resume`` if that checkpoint ends the run as configured (the Trainer's ``max_steps`` reached:
    ``optim.max_steps``, or the same ``optim.epochs`` as the run that wrote it), else None."""
    if resume is None:
        return None
    try:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        step, planned = int(state["global_step"]), int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if cfg.optim.max_steps > 0:
        return step if step >= cfg.optim.max_steps else None
    same_epochs = float(state.get("num_train_epochs", -1)) == float(cfg.optim.epochs)
    return step if same_epochs and step >= planned else None


def open_teacher_cache(cfg: TrainConfig, tok):
    """``stage.distill.cache_dir`` as a ``TopKCache``, after checking that its logits belong to this run's samples,
    frames and pixels (and teacher, when the run names one): ``vamba.training.cache_settings``. Runs before the
    model is built, so a wrong cache fails in seconds."""
    from vamba.training.cache_settings import cache_settings, check_cache_settings
    from vamba.training.distill_cache import TopKCache

    d = cfg.stage.distill
    cache = TopKCache(d.cache_dir)
    found = check_cache_settings(cache.meta, cache_settings(cfg, tok, d.teacher), d.cache_dir, check=d.check_cache)
    if found:
        logger.warning("stage.distill.check_cache=false: distilling from %s although %s", d.cache_dir,
                       "; ".join(found))
    return cache


def _prepare_run_dir(cfg: TrainConfig, out: Path, resume: str | None) -> None:
    """Rank 0's set-up of ``out``: staging left by a killed save, the run files, ``log.jsonl`` cut to the resumed
    step."""
    clean_staging(out)
    write_run_info(cfg, out, resume)
    # log.jsonl holds each step once: what was logged after the checkpoint (all of it when starting anew)
    # comes again
    step = 0 if resume is None else checkpoint_step(resume)
    dropped = truncate_log(out / "log.jsonl", step)
    if resume is not None:
        logger.info("resuming from %s (step %d)", resume, step)
    if dropped:
        logger.info("log.jsonl: %d records after step %d dropped (this run logs those steps again)", dropped, step)


def check_before_run(cfg: TrainConfig) -> None:
    """What must hold before the run directory exists, so that a config that cannot run leaves nothing behind:
    ``validate``, and a distillation cache made for this run's settings (``open_teacher_cache``)."""
    validate(cfg)
    d = cfg.stage.distill
    if d.weight > 0 and d.source == "cache" and d.check_cache:
        open_teacher_cache(cfg, load_tokenizer(cfg))


def train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Run one stage as configured; resumes from the latest checkpoint in ``output_dir`` (``resume=auto``)."""
    check_before_run(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = training_arguments(cfg, out)
    args.process_index  # noqa: B018 (its first access sets up the process group under torchrun)
    # One run per directory, before anything is written: rank 0 locks it, refuses or moves aside another run's files
    # (docs/reliability.md); its failure is broadcast, so the other ranks stop with it.
    on_rank_zero(lambda: rundir.claim(out, cfg.resume), "claiming the run directory")
    with ExitStack() as stack:
        steps_log = stack.enter_context(console_log(out)) if args.process_index == 0 else None
        return _train(cfg, out, args, callbacks or [], steps_log)


def _train(cfg: TrainConfig, out: Path, args: TrainingArguments, callbacks: list[TrainerCallback],
           steps_log: logging.Logger | None) -> TrainResult:
    resume = resume_checkpoint(cfg, out)
    done = finished_step(cfg, resume) if (out / "final").is_dir() else None
    if done is not None:
        # The Trainer, resumed at its last step, would train one more and overwrite final/: a rerun of a finished
        # command changes nothing instead.
        logger.info("%s: already trained to step %d (final/ is there); nothing to do. Raise optim.max_steps or "
                    "optim.epochs to train further, or use resume=replace to start anew", out, done)
        rundir.release(out)
        return TrainResult(out, out / "final", [], "(already trained)")
    if resume is not None:  # before config.yaml is rewritten: the run continues as it was configured
        on_rank_zero(lambda: check_resume_settings(cfg, resume), "checking the resumed run's settings")
    # Rank 0's set-up, its failure broadcast: the other ranks stop with it instead of waiting in their next collective.
    on_rank_zero(lambda: _prepare_run_dir(cfg, out, resume), "preparing the run directory")
    if cfg.debug.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)

    if cfg.deepspeed is not None:
        from vamba.models.zero import init_distributed

        init_distributed()  # before the model: ZeRO-3 partitions it as it is built
    context = None
    if cfg.parallel.context_parallel_size > 1:
        from vamba.parallel.groups import init_context_parallel

        context = init_context_parallel(cfg.parallel.context_parallel_size)
    tok = load_tokenizer(cfg)
    d = cfg.stage.distill
    cache = open_teacher_cache(cfg, tok) if d.weight > 0 and d.source == "cache" else None  # before the model
    processor = training_processor(cfg, tok)
    model = build_model(cfg, tok)
    model.set_context_parallel(context)
    try:  # a pattern that matches nothing is the config's error (a typo): one line naming the key, exit code 2
        summary: TrainableSummary | LoraSummary = apply_stage(model, cfg.stage)
    except ValueError as e:
        raise ConfigError(f"stage.trainable: {e}") from None
    if cfg.stage.lora.enable:
        model, summary = apply_lora(model, cfg.stage)
    logger.info("stage %s: %s", cfg.stage.name, summary)
    d = cfg.stage.distill
    if d.weight == 0 and (d.teacher or d.cache_dir):  # e.g. paper_pretrain's teacher with lambda set to 0
        logger.warning("stage.distill.weight=0: no distillation; %s is not used (lambda > 0 distils from it)",
                       f"stage.distill.teacher={d.teacher}" if d.teacher else f"stage.distill.cache_dir={d.cache_dir}")

    teacher = None
    if d.weight > 0 and d.source == "online":
        teacher = load_teacher(d.teacher, dtype=torch.bfloat16 if cfg.optim.bf16 else torch.float32)
    if cache is not None:
        cache.check_vocab(model.config.text_config.vocab_size)

    from vamba.data.collate import Collator
    from vamba.data.host_memory import host_memory_bytes, loader_memory_warning

    shard = None if context is None else (context.rank, context.size)
    local = shard if cfg.parallel.decode == "local" else None  # else: whole videos decoded, cut after collation
    dataset = build_dataset(cfg, tok, skip_log=str(out / "skips.jsonl"), shard=local)
    eval_dataset = build_eval_dataset(cfg, tok, skip_log=str(out / "skips.jsonl"))
    world = int(os.environ.get("WORLD_SIZE", 1))
    data = cfg.data
    memory = loader_memory_warning(data.num_frames, data.max_pixels, data.num_workers, cfg.optim.per_device_batch_size,
                                   int(os.environ.get("LOCAL_WORLD_SIZE", 1)), host_memory_bytes(),
                                   data.video_budget if data.packing else None, data.pixel_dtype)
    observers: list[TrainerCallback] = [
        RunSummary(out, samples_per_source(dataset), len(dataset), cfg.data.packing, str(summary),
                   data_parallel=world // cfg.parallel.context_parallel_size,
                   val_samples=None if eval_dataset is None else len(eval_dataset),
                   warnings=[memory] if memory else []), CurvesCallback(out)]
    if steps_log is not None:
        observers.append(ConsoleLogCallback(steps_log))
    trainer = VambaTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
        data_collator=KeyedCollator(Collator(tok.pad_token_id), shard=None if local else shard),
        context_parallel=context, checkpoint_processor=processor,
        callbacks=[JsonlLogger(out / "log.jsonl"), ScheduleOnResume(), *observers, *callbacks], teacher=teacher,
        teacher_cache=cache,
        distill_weight=d.weight, distill_top_k=d.top_k, distill_temperature=d.temperature,
        token_ids={**special_token_ids(tok), "pad_token_id": tok.pad_token_id})
    if cfg.fsdp.enable and not trainer.is_fsdp_enabled:
        # accelerate 1.16 attaches the FSDP plugin only on GPU-like devices (accelerate/state.py: MULTI_CPU is not in
        # the list that reads it); the run would otherwise train as plain DDP without a word
        raise ConfigError(f"fsdp.enable=true but accelerate did not turn FSDP on (distributed type "
                          f"{trainer.accelerator.distributed_type}): FSDP needs CUDA GPUs under torchrun; on CPU use "
                          f"fsdp=none (DDP) or deepspeed=zero2|zero3")
    if cfg.debug.stop_after_steps > 0:
        trainer.add_callback(StopAfter(cfg.debug.stop_after_steps))
    stall = StallDump(cfg.debug.stall_dump_s) if cfg.debug.stall_dump_s > 0 else None
    if stall is not None:
        trainer.add_callback(stall)
    if cfg.debug.profile_steps:
        trainer.add_callback(StepProfiler(cfg.debug.profile_steps, out / "profile", trainer.args.process_index))
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        if stall is not None:
            stall.stop()

    final = out / "final"
    finished = cfg.debug.stop_after_steps <= 0 or trainer.state.global_step >= trainer.state.max_steps
    if finished and eval_dataset is not None and trainer.state.global_step % args.eval_steps:
        trainer.evaluate()  # the last step's validation loss (the Trainer evaluates only every eval_steps)
    if finished and not cfg.logging.save_final:
        logger.info("logging.save_final=false: the trained model is not written to %s", final)
    elif finished:
        trained = trainer.model
        if cfg.stage.lora.enable:
            trained = trained.merge_and_unload()
        # parameters split over the ranks (FSDP, ZeRO-3) are gathered by the Trainer on every rank; under ZeRO-2 each
        # rank holds them whole and rank 0 saves them as DDP does (the Trainer's save would keep a LoRA run's
        # adapters, not the merged model)
        sharded = trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled
                                              and any(is_zero3(p) for p in trained.parameters()))
        if args.process_index == 0 or sharded:
            if sharded:
                trainer.save_model(str(final))  # every rank: gathers ZeRO-3 / FSDP shards into one state dict
            else:
                trained.save_pretrained(str(final))
        if args.process_index == 0:
            save_processor(processor, final)
    skips = getattr(getattr(dataset, "dataset", dataset), "skips", None)
    if skips is not None and args.process_index == 0:
        logger.info("data: %s", skips.report())
    rundir.release(out)  # (a run that raises keeps it until its process ends or trains here again)
    return TrainResult(out, final, list(trainer.state.log_history), str(summary))
