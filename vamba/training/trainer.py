"""``VambaTrainer``: the HF ``Trainer`` with VAMBA's loss, parameter groups and step metrics.

The Trainer (with DeepSpeed or DDP through accelerate) owns the loop, checkpoints, exact resume (model,
optimizer, scheduler, RNG states, data position), logging back-ends and progress bars. This class adds:

- loss = LM loss + lambda * distillation (paper Sec. 3.3), the teacher run online on the same batch or read
  from a top-k cache (``vamba.training.distill``); lambda = 0 never touches a teacher;
- weight decay only where it belongs (``vamba.training.params.NO_DECAY_PATTERNS``);
- ``eval_loss`` on a validation set: the LM loss alone (no distillation term, no teacher run);
- per-step logs: ``lm_loss``, ``distill_loss``, ``alpha/layer_i`` (mean alpha of layer i), ``tokens_per_s``
  (text + video tokens), ``frames_per_s`` (temporal patches x 2; an image counts 2), ``step_s``,
  ``data_wait_frac`` (the share of the wall time this process waited for the DataLoader's next batch),
  ``model_tflops`` (this process's model FLOPs per second: ``vamba.models.flops.step_flops`` over every micro-batch,
  the vision tower included, backward counted for the parts that train) and, on CUDA, ``mfu`` (that over the
  device's dense bf16 peak) and ``gpu_peak_gib/rank_r`` (each rank's peak allocated memory since the previous log);
  the first log also has ``startup_s``, the seconds from the process's start to the end of its first step;
  ``forward_s``, ``backward_s`` and ``optimizer_s``: a step's seconds in ``compute_loss`` (the forward, the loss and,
  with distillation, the teacher: ``teacher_s``), in the rest of ``training_step`` (the batch's copy to the device,
  the backward, DeepSpeed's gradient work) and in the optimizer's ``step`` (any ``torch.optim`` optimizer's, found by
  torch's global step hooks: also the one DeepSpeed steps inside the backward), each ended by a device
  synchronisation; their sum against ``step_s`` shows what the data wait and the Trainer's own work take;
- resume that is exact and never partial (docs/training.md): the dataset's epoch (random frame draws) set at
  every epoch's start, checkpoints staged and published by one rename (``vamba.training.checkpoints``), every
  weight checked before the Trainer's lenient load, LoRA's fully trained parameters saved beside the adapters.
  These override the Trainer's ``_run_epoch``, ``_get_output_dir``, ``_save_checkpoint`` and
  ``_load_from_checkpoint``, which have the same signatures in transformers 5.17 and 5.24.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vamba.data.dataset import set_data_epoch
from vamba.data.shard import shard_batch
from vamba.data.teacher_view import build_teacher_view
from vamba.data.vision import normalize_patches
from vamba.models.flops import step_flops, trained_parts
from vamba.models.loading import IncompatibleCheckpointError, check_checkpoint_tensors
from vamba.models.names import matches_any
from vamba.training.checkpoints import STAGING, clean_staging, publish
from vamba.training.distill import distillation_loss, supervised_positions
from vamba.training.params import NO_DECAY_PATTERNS
from vamba.training.safe_load import check_checkpoint_pickles
from vamba.training.teacher import teacher_logits_at

# Dense bf16 peak of the GPUs we run on (vendor datasheets, no sparsity), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
KEYS_FIELD = "sample_keys"  # added by KeyedCollator; never reaches the model
OUTSIDE_ADAPTERS = "outside_adapters.safetensors"  # LoRA checkpoints: parameters trained in full beside the adapters


class KeyedCollator:
    """``vamba.data`` collator plus the samples' keys (``batch["sample_keys"]``, in row then sample order),
    which a cached teacher needs to find each sample's top-k logits. ``shard=(rank, size)``: keep only this
    context-parallel rank's part of the video (``vamba.data.shard.shard_batch``)."""

    def __init__(self, collator, shard: tuple[int, int] | None = None) -> None:
        self.collator = collator
        self.shard = shard

    def __call__(self, items):
        batch = self.collator(items)
        if self.shard is not None:
            batch = shard_batch(batch, *self.shard)
        rows = items if isinstance(items[0], list) else [[s] for s in items]
        batch[KEYS_FIELD] = [s.key for row in rows for s in row]
        return batch


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


class VambaTrainer(Trainer):
    def __init__(self, *args, teacher: nn.Module | None = None, teacher_cache=None, distill_weight: float = 0.0,
                 distill_top_k: int | None = None, distill_temperature: float = 1.0, token_ids: dict[str, int],
                 checkpoint_processor=None, context_parallel=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # saved into every checkpoint (its own save_pretrained), not passed as the Trainer's processing_class,
        # which would also rewrite the model config's special-token ids from the tokenizer
        self.checkpoint_processor = checkpoint_processor
        self.context_parallel = context_parallel  # vamba.parallel.groups.ContextParallel, or None
        if distill_weight > 0 and teacher is None and teacher_cache is None:
            raise ValueError("distill_weight > 0 needs a teacher or a teacher cache")
        self.teacher, self.teacher_cache = teacher, teacher_cache
        self.distill_weight, self.distill_top_k, self.distill_temperature = distill_weight, distill_top_k, distill_temperature
        self.token_ids = token_ids
        # Loss is a mean per micro-batch; the Trainer divides it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._sums: dict[str, float] = defaultdict(float)
        self._last_log, self._last_step = time.perf_counter(), 0
        self._parts = trained_parts(self.model.named_parameters())  # for the step's model FLOPs
        self._first_log = True
        self._staging = False  # True while a checkpoint is being written (see _save_checkpoint)
        self._optimizer_depth, self._optimizer_started = 0, 0.0  # the step phases (training_step, _optimizer_*)
        if teacher is not None:
            teacher.to(self.args.device)

    # -- data -------------------------------------------------------------------------------------------
    def _run_epoch(self, model, epoch, *args, **kwargs):
        # Random frame draws depend on the dataset's epoch. The Trainer's ``set_epoch`` reaches the dataset only
        # through accelerate, which skips it after a mid-epoch resume (the loader that skips the trained batches
        # forwards the epoch to its sampler alone) and cannot see it inside a ``PackedDataset``: set it here,
        # before the epoch's loader (and its worker processes, which copy the dataset) starts.
        set_data_epoch(self.train_dataset, epoch)
        return super()._run_epoch(model, epoch, *args, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's fetch of a step's micro-batches, timed: the time spent here is the time the loop waited for
        the DataLoader (``data_wait_frac``); the batch's copy to the device happens later, in the step."""
        started = time.perf_counter()
        try:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        finally:
            self._sums["data_wait_s"] += time.perf_counter() - started

    def get_train_dataloader(self):
        """With context parallelism, the ranks of a CP group read the same batches: accelerate's batch sampler
        shards over the data-parallel ranks (CP groups), not over all processes (docs/context_parallel.md)."""
        loader = super().get_train_dataloader()
        cp = self.context_parallel
        if cp is not None:
            sampler = getattr(loader, "batch_sampler", None)
            if sampler is None or not hasattr(sampler, "num_processes"):
                raise RuntimeError(f"context parallelism needs accelerate's BatchSamplerShard, the training "
                                   f"loader has {type(sampler).__name__}")
            sampler.num_processes, sampler.process_index = cp.dp_size, cp.dp_rank
        return loader

    def _check_same_samples(self, keys: list[str] | None) -> None:
        """Every rank of a CP group must hold the same samples (its text is replicated): a mismatch (e.g. a
        sample skipped on one rank only) would silently train on nonsense, so it stops the run."""
        import torch.distributed as dist

        cp = self.context_parallel
        every: list = [None] * cp.size
        dist.all_gather_object(every, keys, group=cp.group)
        if any(k != every[0] for k in every):
            raise RuntimeError(f"context-parallel ranks hold different samples in one step: {every}")

    # -- checkpoints (vamba.training.checkpoints) --------------------------------------------------------
    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """The Trainer's save, written under ``.staging/`` and published by one rename once every rank is done
        (under DeepSpeed each rank writes its own shards), so that ``checkpoint-<step>/`` is complete or absent."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = run_dir / STAGING / name
        if self.args.should_save:
            clean_staging(run_dir)
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save and self.checkpoint_processor is not None:
                self.checkpoint_processor.save_pretrained(str(staged))  # every checkpoint loads with AutoProcessor
            if self.args.should_save and _is_peft(self.model) and not self.is_deepspeed_enabled:
                save_file({n: p.detach().cpu().contiguous() for n, p in _outside_adapters(self.model).items()},
                          str(staged / OUTSIDE_ADAPTERS))
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish(staged, run_dir / name)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """The Trainer's ``train``; a checkpoint to resume from is checked first (``check_checkpoint_pickles``):
        DeepSpeed unpickles its files with ``weights_only=False``, so a pickle naming anything beyond the globals our
        own checkpoints hold is refused before any rank loads it."""
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        if isinstance(resume_from_checkpoint, str | os.PathLike):
            check_checkpoint_pickles(resume_from_checkpoint)
        hooks = [register_optimizer_step_pre_hook(self._optimizer_pre),
                 register_optimizer_step_post_hook(self._optimizer_post)]
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    # -- step phases -------------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.args.device.type == "cuda":
            torch.cuda.synchronize(self.args.device)

    def _optimizer_pre(self, optimizer, args, kwargs) -> None:
        self._optimizer_depth += 1
        if self._optimizer_depth == 1:  # the outermost step: a wrapper's step may call the one it wraps
            self._sync()
            self._optimizer_started = time.perf_counter()

    def _optimizer_post(self, optimizer, args, kwargs) -> None:
        self._optimizer_depth -= 1
        if self._optimizer_depth == 0:
            self._sync()
            self._sums["optimizer_s"] += time.perf_counter() - self._optimizer_started

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Tensor | int | None = None) -> Tensor:
        started = time.perf_counter()
        forward, optimizer = self._sums["forward_s"], self._sums["optimizer_s"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._sync()
        inside = (self._sums["forward_s"] - forward) + (self._sums["optimizer_s"] - optimizer)  # DeepSpeed's step
        self._sums["backward_s"] += time.perf_counter() - started - inside
        return loss

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """The Trainer loads weights with ``strict=False`` and only warns about a missing tensor, which then keeps
        its initial value; check every tensor's name and shape first (``IncompatibleCheckpointError`` naming them).
        With LoRA the Trainer saves the adapters only: parameters trained in full beside them come back from
        ``OUTSIDE_ADAPTERS``. (Under DeepSpeed the engine loads its own files, strictly.)"""
        target = model if model is not None else self.model
        peft = _is_peft(target)
        if not self.is_deepspeed_enabled and not self.is_fsdp_enabled and not peft:
            check_checkpoint_tensors(resume_from_checkpoint, self.accelerator.unwrap_model(target).state_dict())
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if peft and not self.is_deepspeed_enabled:
            _load_outside_adapters(target, os.path.join(resume_from_checkpoint, OUTSIDE_ADAPTERS))

    # -- optimizer groups ---------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [n for n, p in model.named_parameters() if not matches_any(n, NO_DECAY_PATTERNS)]

    # -- loss --------------------------------------------------------------------------------------------
    def _teacher_targets(self, inputs: dict, positions: Tensor, keys: list[str] | None):
        if self.teacher_cache is not None:
            if keys is None:
                raise ValueError("a cached teacher needs sample keys in the batch (use KeyedCollator)")
            parts = [self.teacher_cache[k] for k in keys]
            values = torch.cat([v for v, _ in parts]).to(positions.device)
            indices = torch.cat([i for _, i in parts]).to(positions.device)
            if values.shape[0] != positions.shape[0]:
                raise ValueError(f"teacher cache holds {values.shape[0]} positions for samples {keys[:4]}..., the "
                                 f"batch has {positions.shape[0]}: the cache was written for other data settings")
            return values, indices
        cpu = {k: v.detach().cpu() for k, v in inputs.items() if isinstance(v, Tensor)}
        view = build_teacher_view(cpu, vision_start_id=self.token_ids["vision_start_token_id"],
                                  video_pad_id=self.token_ids["video_token_id"], pad_id=self.token_ids["pad_token_id"])
        device = next(self.teacher.parameters()).device
        view.inputs = {k: v.to(device) for k, v in view.inputs.items()}
        if "pixel_values_videos" in view.inputs:
            view.inputs["pixel_values_videos"] = view.inputs["pixel_values_videos"].to(self.teacher.dtype)
        return teacher_logits_at(self.teacher, view, positions.cpu()).to(positions.device)

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Tensor | int | None = None):
        started = time.perf_counter()
        keys = inputs.pop(KEYS_FIELD, None)
        if self.context_parallel is not None:
            self._check_same_samples(keys)
        if "pixel_values" in inputs:  # data.pixel_dtype=uint8: normalised here, on the model's device (bit-equal)
            inputs["pixel_values"] = normalize_patches(inputs["pixel_values"])
        out = model(**inputs)
        loss = lm_loss = out.loss
        if not model.training:
            # evaluation (the validation set): the LM loss alone, comparable across distillation weights and
            # without a teacher or cache entry for held-out samples; the step metrics stay the training steps'
            return (loss, out) if return_outputs else loss
        self._sums["lm_loss"] += float(lm_loss.detach())
        if self.distill_weight > 0:
            mask = supervised_positions(inputs["labels"])
            positions = mask.nonzero()
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            student = head(out.last_hidden_state[mask])
            teacher_started = time.perf_counter()
            teacher = self._teacher_targets(inputs, positions, keys)
            self._sync()
            self._sums["teacher_s"] += time.perf_counter() - teacher_started
            kd = distillation_loss(student, teacher, top_k=self.distill_top_k, temperature=self.distill_temperature)
            loss = lm_loss + self.distill_weight * kd
            self._sums["distill_loss"] += float(kd.detach())
        self._count(inputs)
        self._sums["forward_s"] += time.perf_counter() - started  # float() above waited for the device
        return (loss, out) if return_outputs else loss

    def _count(self, inputs: dict) -> None:
        grid = inputs.get("grid_thw")
        video_tokens = int(grid.prod(-1).sum()) // 4 if grid is not None and len(grid) else 0
        frames = int((grid[:, 0] * 2).sum()) if grid is not None and len(grid) else 0  # temporal patch = 2 frames
        # with context parallelism the video counts are this rank's part, the text is every rank's
        text_share = self.context_parallel.size if self.context_parallel is not None else 1
        self._sums["tokens"] += int(inputs["attention_mask"].sum()) / text_share + video_tokens
        self._sums["frames"] += frames
        self._sums["micro_batches"] += 1
        config = self.accelerator.unwrap_model(self.model).config
        self._sums["flops"] += step_flops(config, inputs, self._parts)

    # -- logging -----------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._sums["micro_batches"]:
            now = time.perf_counter()
            seconds = max(now - self._last_log, 1e-9)
            n = self._sums["micro_batches"]
            world = self.args.world_size
            logs["lm_loss"] = round(self._sums["lm_loss"] / n, 4)
            if "distill_loss" in self._sums:
                logs["distill_loss"] = round(self._sums["distill_loss"] / n, 4)
            # this rank's counts times the world size: ranks see batches of the same size in expectation
            logs["tokens_per_s"] = round(self._sums["tokens"] * world / seconds, 1)
            logs["frames_per_s"] = round(self._sums["frames"] * world / seconds, 2)
            steps = max(self.state.global_step - self._last_step, 1)
            logs["step_s"] = round(seconds / steps, 4)
            logs["data_wait_frac"] = round(self._sums["data_wait_s"] / seconds, 4)
            for phase in ("forward_s", "backward_s", "optimizer_s", "teacher_s"):
                if phase in self._sums:
                    logs[phase] = round(self._sums[phase] / steps, 4)
            logs["model_tflops"] = float(f"{self._sums['flops'] / seconds / 1e12:.4g}")  # tiny models: ~1e-6
            peak = _peak_flops(self.args.device)
            if peak:
                logs["mfu"] = round(self._sums["flops"] / seconds / peak, 4)
            if self._first_log:
                logs["startup_s"] = round(time.time() - _process_start(), 1)
                self._first_log = False
            if self.args.device.type == "cuda":
                logs.update(_peak_memory_per_rank(self.args.device))
            logs.update(alpha_per_layer(self.accelerator.unwrap_model(self.model)))
            self._sums.clear()
            self._last_log, self._last_step = now, self.state.global_step
        super().log(logs, start_time)


def _process_start() -> float:
    """This process's start (seconds since the epoch): the command's start under ``vamba train``, the worker's
    under torchrun."""
    import psutil

    return psutil.Process().create_time()


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _outside_adapters(model: nn.Module) -> dict[str, Tensor]:
    """Trainable parameters of a LoRA model that are not adapter weights (e.g. the merger trained in full)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}


def _load_outside_adapters(model: nn.Module, file: str) -> None:
    wanted = _outside_adapters(model)
    if not wanted:
        return
    if not os.path.isfile(file):
        raise IncompatibleCheckpointError(f"{file} is missing: the checkpoint lacks the {len(wanted)} parameters "
                                          f"trained beside the LoRA adapters (e.g. {sorted(wanted)[:3]})")
    check_checkpoint_tensors(file, wanted)
    tensors = load_file(file)
    with torch.no_grad():
        for name, p in wanted.items():
            p.copy_(tensors[name])


def _peak_memory_per_rank(device: torch.device) -> dict[str, float]:
    """``gpu_peak_gib/rank_r``: peak allocated memory of every rank since the last log (a collective: the
    Trainer calls ``log`` on every rank, right after gathering the loss)."""
    import torch.distributed as dist

    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30], device=device)
    torch.cuda.reset_peak_memory_stats(device)
    peaks = [peak]
    if dist.is_available() and dist.is_initialized():
        peaks = [torch.zeros_like(peak) for _ in range(dist.get_world_size())]
        dist.all_gather(peaks, peak)
    return {f"gpu_peak_gib/rank_{r}": round(float(p), 2) for r, p in enumerate(peaks)}


@torch.no_grad()
def alpha_per_layer(model: nn.Module) -> dict[str, float]:
    """``alpha/layer_i``: the mean of layer i's alpha balance as used in forward (clamped to [0, 1]).
    Under ZeRO-3 a partitioned alpha has no local values; it is skipped rather than gathered every step."""
    out = {}
    for name, p in model.named_parameters():
        if name.endswith(".alpha") and p.numel() > 0:
            layer = name.split(".layers.")[1].split(".")[0]
            out[f"alpha/layer_{layer}"] = round(float(p.detach().float().clamp(0, 1).mean()), 4)
    return out
