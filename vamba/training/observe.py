"""What a training run tells its user: the start-up summary, the invocation history in ``run_info.json``, the
console log file and the training curves, all in the run directory.

- ``run_info.json`` keeps every invocation (``invocations``: argv, date, commit, world size, the checkpoint and step
  it resumed from, and the start-up summary); its top-level keys are the latest invocation's, as before.
- ``RunSummary`` prints, at the start of training, what the batch arithmetic comes to (samples per source, steps per
  epoch, gradient accumulation, per-device and global batch, total steps and epochs, trainable parameters) and warns
  where it surprises: a global batch larger than the training set makes every optimizer step a whole epoch.
- ``console_log`` copies our log records, transformers' and the Trainer's per-step logs into ``console.log``.
- ``write_curves`` draws ``loss.png`` (loss and eval loss, learning rate, gradient norm) from ``log.jsonl``.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from vamba.utils.io import atomic_write_json, read_jsonl
from vamba.utils.logging import get_logger, log_once

logger = get_logger(__name__)
RUN_INFO = "run_info.json"
CONSOLE_LOG = "console.log"
CURVES = "loss.png"


# -- run_info.json: one entry per invocation ---------------------------------------------------------------
def append_invocation(out: Path, entry: dict[str, Any], environment: dict[str, Any]) -> None:
    """Add this invocation to ``run_info.json`` (a file from before the history became one entry)."""
    path = out / RUN_INFO
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:  # written atomically, so only a hand edit gets here
            logger.warning("%s unreadable (%s): its invocation history starts anew", path, e)
    history = previous.get("invocations")
    if history is None:
        history = [{k: v for k, v in previous.items() if k != "environment"}] if previous else []
    atomic_write_json(path, {**entry, "environment": environment, "invocations": [*history, entry]})


def update_invocation(out: Path, **fields: Any) -> None:
    """Add ``fields`` to the latest invocation of ``run_info.json`` (and its top-level copy)."""
    path = out / RUN_INFO
    info = json.loads(path.read_text())
    info.update(fields)
    info["invocations"][-1].update(fields)
    atomic_write_json(path, info)


# -- the start-up summary -----------------------------------------------------------------------------------
def samples_per_source(dataset) -> dict[str, int]:
    """Training samples per mixture source, through the wrappers the training set may have (packed rows, the
    memory cache, a subset). Empty when the data is not a mixture."""
    indices: list[int] | None = None
    while not hasattr(dataset, "source_name"):
        if hasattr(dataset, "indices") and indices is None:  # torch Subset: the first one selects
            indices = list(dataset.indices)
        inner = getattr(dataset, "dataset", None) or getattr(dataset, "data", None)
        if inner is None:
            return {}
        dataset = inner
    counts = Counter(dataset.source_name(i) for i in (range(len(dataset)) if indices is None else indices))
    return dict(sorted(counts.items()))


class RunSummary(TrainerCallback):
    """At ``on_train_begin`` (the Trainer has its dataloader, accumulation and step count): log the summary, warn
    about batch arithmetic that would surprise, and save it in ``run_info.json``."""

    def __init__(self, out: Path, sources: dict[str, int], dataset_len: int, packed: bool, trainable: str,
                 data_parallel: int, val_samples: int | None = None, warnings: list[str] | None = None) -> None:
        self.out = out
        self.sources = sources
        self.dataset_len = dataset_len
        self.packed = packed
        self.trainable = trainable
        self.data_parallel = data_parallel
        self.val_samples = val_samples
        self.warnings = list(warnings or [])  # found before the Trainer starts (vamba.data.host_memory)
        self.summary: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        batches = len(train_dataloader) if train_dataloader is not None else None
        accumulation = args.gradient_accumulation_steps
        per_device = args.per_device_train_batch_size
        global_batch = per_device * self.data_parallel * accumulation
        steps_per_epoch = None if batches is None else max(math.ceil(batches / accumulation), 1)
        unit = "packed rows" if self.packed else "samples"
        summary = {
            "samples": sum(self.sources.values()) if self.sources else self.dataset_len,
            "samples_per_source": self.sources, "packed_rows": self.dataset_len if self.packed else None,
            "world_size": args.world_size, "data_parallel_size": self.data_parallel,
            "per_device_batch": per_device, "gradient_accumulation": accumulation, "global_batch": global_batch,
            "micro_batches_per_epoch": batches, "steps_per_epoch": steps_per_epoch, "total_steps": state.max_steps,
            "epochs": state.num_train_epochs, "trainable": self.trainable.splitlines()[0],
            "validation_samples": self.val_samples, "eval_steps": args.eval_steps if self.val_samples else None,
        }
        warnings = list(self.warnings)
        if global_batch > self.dataset_len:
            warnings.append(f"the global batch ({global_batch}) is larger than the training set ({self.dataset_len} "
                            f"{unit}): every optimizer step is a whole epoch of {self.dataset_len} {unit}, not "
                            f"{global_batch}; lower optim.global_batch_size or add data")
        elif batches is not None and batches % accumulation:
            warnings.append(f"{batches} micro-batches per epoch are not a multiple of the gradient accumulation "
                            f"({accumulation}): each epoch's last step averages {batches % accumulation}")
        summary["warnings"] = warnings
        self.summary = summary
        if not state.is_world_process_zero:
            return
        sources = ", ".join(f"{name} {n}" for name, n in self.sources.items()) or "-"
        lines = [
            f"samples {summary['samples']} ({sources})" + (f" in {self.dataset_len} packed rows" if self.packed else ""),
            f"batch: {per_device} per device x {self.data_parallel} data-parallel x {accumulation} accumulation = "
            f"{global_batch} global (world size {args.world_size})",
            f"steps: {steps_per_epoch} per epoch ({batches} micro-batches per process), {state.max_steps} in total, "
            f"{state.num_train_epochs} epoch(s)",
            self.trainable.splitlines()[0],
        ]
        if self.val_samples:
            lines.append(f"validation: {self.val_samples} samples, eval_loss every {args.eval_steps} steps")
        logger.info("run summary:\n  %s", "\n  ".join(lines))
        for warning in warnings:
            logger.warning("%s", warning)
        if (self.out / RUN_INFO).exists():
            update_invocation(self.out, summary=summary)


# -- console.log ---------------------------------------------------------------------------------------------
class ConsoleLogCallback(TrainerCallback):
    """The Trainer's per-step logs (what its progress bar prints) as lines of ``console.log``."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log.info("step %d: %s", state.global_step, logs)


@contextmanager
def console_log(out: Path) -> Iterator[logging.Logger]:
    """Copy the ``vamba`` and ``transformers`` loggers and Python warnings into ``out/console.log`` (appended: a
    resumed run continues the file) while the block runs; an exception leaving it is written there with its
    traceback. Yields the logger of the Trainer's step lines."""
    handler = logging.FileHandler(out / CONSOLE_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    names = ("vamba", "transformers", "py.warnings")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    logging.captureWarnings(True)
    # captured warnings go to the "py.warnings" logger alone: without a console handler of its own they would now
    # reach the file only
    warnings_console = None
    if not logging.getLogger("py.warnings").handlers[:-1]:  # ours is the only one
        warnings_console = logging.StreamHandler()
        logging.getLogger("py.warnings").addHandler(warnings_console)
    # the step lines go to the file only: the Trainer already prints them on the console
    steps = logging.getLogger("vamba_console.steps")
    steps.propagate = False
    steps.setLevel(logging.INFO)
    steps.addHandler(handler)
    try:
        yield steps
    except BaseException:
        logger.exception("training stopped by an exception")
        raise
    finally:
        logging.captureWarnings(False)
        if warnings_console is not None:
            logging.getLogger("py.warnings").removeHandler(warnings_console)
        for name in names:
            logging.getLogger(name).removeHandler(handler)
        steps.removeHandler(handler)
        handler.close()


# -- loss.png ------------------------------------------------------------------------------------------------
PANELS = (("loss", ("loss", "lm_loss", "distill_loss", "eval_loss")), ("learning rate", ("learning_rate",)),
          ("gradient norm", ("grad_norm",)))


def write_curves(out: Path) -> Path | None:
    """``loss.png`` from ``log.jsonl``; None (with a message naming the fix) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log_once(logger, f"{CURVES} not drawn: matplotlib is not installed (pip install matplotlib)")
        return None
    records = read_jsonl(out / "log.jsonl") if (out / "log.jsonl").exists() else []
    # A Figure with its own canvas, not pyplot: no global state, no display backend.
    figure = Figure(figsize=(7, 8), layout="constrained")
    FigureCanvasAgg(figure)
    for row, (title, keys) in enumerate(PANELS):
        axes = figure.add_subplot(len(PANELS), 1, row + 1)
        for key in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                axes.plot(*zip(*points), marker="o" if key == "eval_loss" else None, markersize=3, label=key)
        axes.set_title(title)
        axes.set_xlabel("step")
        if axes.lines:
            axes.legend(loc="best", fontsize="small")
    path = out / CURVES
    tmp = path.with_name(f".{CURVES}.tmp")
    figure.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path


class CurvesCallback(TrainerCallback):
    """Redraw ``loss.png`` at every checkpoint and at the end (after ``JsonlLogger`` has written the step)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_curves(self.out)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_curves(self.out)
