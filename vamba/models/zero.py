"""DeepSpeed ZeRO-3 support, the only module of the package that imports DeepSpeed (tests/test_layering.py).

Under ``deepspeed.zero.Init`` (how transformers builds a model for ZeRO-3, e.g. ``_from_config`` or
``from_pretrained`` with a ZeRO-3 config) every submodule's parameters are partitioned across the ranks as soon as
that submodule's ``__init__`` returns: a parent that initialises or copies its children's weights sees empty
shards. ``gathered`` collects the full tensors for the duration of a block; with ``modifier_rank=0`` rank 0's
writes are scattered back to every rank on exit. Without DeepSpeed (or for parameters that are not partitioned)
every helper here is a no-op. ZeRO-3 also needs every rank to run every module each step; the model keeps that
rule itself (a batch without video still runs the video path, docs/batch.md).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


def is_zero3(param: nn.Parameter) -> bool:
    """A parameter that DeepSpeed ZeRO-3 manages (partitioned across the ranks, gathered around its use)."""
    return hasattr(param, "ds_id")


def is_partitioned(param: nn.Parameter) -> bool:
    """A ZeRO-3 parameter whose full tensor is not gathered at the moment (an outer context, e.g.
    transformers' own weight initialisation, may already have gathered it: gathering twice is an error)."""
    if not is_zero3(param):
        return False
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return param.ds_status != ZeroParamStatus.AVAILABLE


def full_numel(param: nn.Parameter) -> int:
    """Elements of the whole parameter; a ZeRO-3 parameter's local tensor is an empty placeholder."""
    return getattr(param, "ds_numel", None) or param.numel()


@contextmanager
def gathered(params: Iterable[nn.Parameter], modifier_rank: int | None = 0) -> Iterator[bool]:
    """The full tensors of ``params`` inside the block. Yields whether this rank's writes are kept: always without
    partitioned parameters; else only on ``modifier_rank`` (its values are scattered to every rank on exit)."""
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield True
        return
    import deepspeed  # only reachable when DeepSpeed partitioned the parameters

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield modifier_rank is not None and deepspeed.comm.get_rank() == modifier_rank


def check_zero3_partitioned(model: nn.Module) -> None:
    """Under ZeRO-3 every parameter must come out of ``deepspeed.zero.Init``. A module built outside it keeps
    its buffers on the CPU (DeepSpeed later moves only parameters), which failed the first GPU step
    (rotary inv_freq on cpu, 2B, H200, 2026-12-01). Raises ``RuntimeError`` naming a few such parameters."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return
    missed = [name for name, p in model.named_parameters() if not is_zero3(p)]
    if missed:
        raise RuntimeError(f"ZeRO-3: {len(missed)} parameters were built outside deepspeed.zero.Init "
                           f"(e.g. {missed[:3]}); build the model with from_pretrained or _from_config")


def init_distributed() -> None:
    """Attach DeepSpeed's communicator to the torch process group (under a launcher, creating it). ZeRO-3 partitions
    parameters as the model is built (``zero.Init``): its communicator must know the world size by then; on an
    existing process group this only attaches DeepSpeed to it."""
    import deepspeed

    deepspeed.init_distributed()


def checkpoint_classes() -> list[type]:
    """DeepSpeed's classes that its ZeRO checkpoints pickle (the loss scaler, the ZeRO stage enum, the fragment
    addresses of flat parameter groups): data, which ``vamba.training.safe_load`` admits. Empty without DeepSpeed
    (a checkpoint that names them is not one this install can resume)."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
