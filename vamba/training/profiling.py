"""``debug.profile_steps``: a ``torch.profiler`` record of chosen optimizer steps of a training run.

A step's seconds split by phase (``forward_s``, ``backward_s``, ``optimizer_s``: vamba.training.trainer) say where
the time goes; a profile says which operators take it. For each listed step (numbered from 1, as ``log.jsonl``'s
``step``) every rank writes into ``<output_dir>/profile/``:

    step<N>_rank<R>.txt       the operators by total device time (CUDA) or CPU time (CPU), the top ``ROWS``
    step<N>_rank<R>.json.gz   the Chrome trace (Perfetto or chrome://tracing open it)

The record spans the Trainer's ``on_step_begin`` to ``on_step_end`` of that step: every micro-batch's forward and
backward, the gradient clipping and the optimizer step; the wait for the first micro-batch comes before it (the
Trainer fetches the step's batches first). Step 1 includes the first compilation and the Triton kernels'
autotuning. Recording slows the recorded step itself (7B stage 1 on an H100, 2026-12-07: 39.7 s against 5.0 s,
writing the trace included), so that step's row in ``log.jsonl`` is not a clean timing; only the listed steps are
recorded.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from vamba.utils.io import atomic_write_text
from vamba.utils.logging import get_logger

_log = get_logger(__name__)
ROWS = 60  # operators in each table


class StepProfiler(TrainerCallback):
    """Records ``steps`` (1-based optimizer steps) with ``torch.profiler`` and writes them to ``out`` (see the
    module docstring); ``rank`` names the files."""

    def __init__(self, steps: list[int], out: Path, rank: int) -> None:
        self.steps, self.out, self.rank = set(steps), Path(out), rank
        self._prof: torch.profiler.profile | None = None
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 in self.steps and self._prof is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self._prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self._prof.__enter__()
            self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._prof is None:
            return
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._started
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        self.out.mkdir(parents=True, exist_ok=True)
        name = f"step{state.global_step}_rank{self.rank}"
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=ROWS, max_name_column_width=80)
        header = (f"optimizer step {state.global_step}, rank {self.rank}: {seconds:.3f} s recorded (on_step_begin to "
                  f"on_step_end), operators by {sort}\n")
        atomic_write_text(self.out / f"{name}.txt", header + table)
        trace = self.out / f"{name}.json.gz"
        prof.export_chrome_trace(str(trace))  # the .gz suffix: torch writes it gzipped
        _log.info("profile of step %d written: %s (%.1f s recorded)", state.global_step, self.out / f"{name}.txt",
                  seconds)

    def on_train_end(self, args, state, control, **kwargs):
        if self._prof is not None:  # the run ended inside a recorded step (an interruption): nothing to write
            self._prof.__exit__(None, None, None)
            self._prof = None
