"""Training memory: gradient-checkpointed layers' inputs kept in host memory until backward
(``VambaForConditionalGeneration.set_checkpoint_offload``; docs/model.md)."""
from __future__ import annotations

import torch


class HostOffload(torch.autograd.graph.saved_tensors_hooks):
    """Keep the tensors autograd saves in this context in host memory (pinned on CUDA) until backward.

    Around a non-reentrant ``checkpoint`` call the only tensors saved under these hooks are the checkpointed
    layer's inputs (the ops inside the layer save placeholders: they are recomputed), i.e. the two streams
    entering each layer: [B, M, D] video + [B, N, D] text per layer, 200 KB per video token at 7B in bf16
    (28 x 3584 x 2 B), which otherwise stay on the GPU from forward to backward. ``bytes`` counts what
    went to the host (the benchmark reports it). Copies are synchronous: the cost is PCIe time, ~2 x that
    volume per step."""

    def __init__(self) -> None:
        self.bytes = 0
        super().__init__(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> tuple[torch.device, torch.Tensor]:
        self.bytes += t.numel() * t.element_size()
        if t.device.type == "cpu":  # already in host memory
            return t.device, t
        host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, pin_memory=True)
        host.copy_(t)
        return t.device, host

    @staticmethod
    def _unpack(packed: tuple[torch.device, torch.Tensor]) -> torch.Tensor:
        device, t = packed
        return t.to(device, non_blocking=True)
