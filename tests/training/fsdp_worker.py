"""One torchrun process of ``vamba train`` with FSDP on CPU (tests/training/test_fsdp.py): the real CLI, with one
gate of accelerate lifted.

accelerate 1.16 attaches an FSDP plugin only on GPU-like devices: in ``AcceleratorState.__init__`` (accelerate/
state.py) the branch that sets ``distributed_type = FSDP`` and ``fsdp_plugin`` is inside ``elif
self.distributed_type in [MULTI_GPU, MULTI_NPU, ...]``, which does not list ``MULTI_CPU``; on CPU the plugin is
dropped and the Trainer trains plain DDP (``vamba train`` then stops with an error saying so). torch's FSDP2
(``fully_shard``) itself runs on CPU over gloo. This worker runs that same branch for ``MULTI_CPU`` (the lines accelerate
runs for GPUs), so everything else, the Trainer's FSDP path, accelerate's ``fsdp2_prepare_model``, its
checkpoint save/load and ``get_state_dict``, runs as it does on GPUs. Usage: ``fsdp_worker.py <vamba train args>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs) -> None:
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    # through vamba's own entry point, as `vamba train`: a two-rank run that succeeded ends there without the
    # interpreter's finalisation (vamba.utils.distributed.end_process), whose abort at exit ("terminate called
    # without an active exception") failed this test's resumed run in CI on 2026-12-07
    from vamba.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
