"""DeepSpeed ZeRO-3 support: touch parameters that may be partitioned across ranks.

Under ``deepspeed.zero.Init`` (how transformers builds a model for ZeRO-3) every submodule's parameters
are partitioned as soon as that submodule's ``__init__`` returns: a parent that initialises or copies its
children's weights sees empty shards. ``gathered`` collects the full tensors for the duration of the
block; with ``modifier_rank=0`` rank 0's writes are scattered back to every rank on exit. Without
DeepSpeed (or for parameters that are not partitioned) it does nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


def is_partitioned(param: nn.Parameter) -> bool:
    """A ZeRO-3 parameter whose full tensor is not gathered at the moment (an outer context, e.g.
    transformers' own weight initialisation, may already have gathered it: gathering twice is an error)."""
    if not hasattr(param, "ds_id"):
        return False
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return param.ds_status != ZeroParamStatus.AVAILABLE


def full_numel(param: nn.Parameter) -> int:
    """Elements of the whole parameter; a ZeRO-3 parameter's local tensor is an empty placeholder."""
    return getattr(param, "ds_numel", None) or param.numel()


@contextmanager
def gathered(params: Iterable[nn.Parameter], modifier_rank: int | None = 0) -> Iterator[None]:
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed  # only reachable when DeepSpeed partitioned the parameters

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield
