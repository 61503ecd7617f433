"""One torchrun process of tests/gpu/test_context_parallel_gpu.py's model check: a small VAMBA with the CUDA kernels
(mamba-ssm, causal-conv1d, the memory-efficient attention kernel), float32 and bfloat16, context parallel over all
ranks against one process: logits, loss and every gradient (mean over the ranks). Rank 0 writes the relative
differences per dtype to the JSON file given as argv[1]; argv[2] is the process-group backend: ``gloo`` (every
rank on GPU 0, exchanging through host memory) or ``nccl`` (one GPU per rank).
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vamba.bench.build import TINY_TEXT, TINY_VISION  # noqa: E402
from vamba.data.shard import shard_batch  # noqa: E402
from vamba.data.vision import PATCH_DIM  # noqa: E402
from vamba.models import VambaConfig, VambaForConditionalGeneration  # noqa: E402
from vamba.parallel.groups import init_context_parallel  # noqa: E402
from vamba.utils.distributed import close_process_group  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def batch() -> dict[str, torch.Tensor]:
    """One packed row: a long video cut mid-sample, a text-only sample, an image + a video."""
    g = torch.Generator().manual_seed(0)
    grids = [[(40, 8, 8)], [], [(1, 8, 8), (6, 4, 8)]]
    lengths = [20, 9, 14]
    ids = torch.randint(3, 512, (1, sum(lengths)), generator=g)
    out = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids),
           "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
           "text_seq_idx": torch.cat([torch.full((n,), s, dtype=torch.int32) for s, n in enumerate(lengths)])[None],
           "grid_thw": torch.tensor([gr for row in grids for gr in row]),
           "visual_row": torch.zeros(3, dtype=torch.long),
           "visual_seq_idx": torch.tensor([s for s, row in enumerate(grids) for _ in row])}
    out["pixel_values"] = torch.randn(int(out["grid_thw"].prod(-1).sum()), PATCH_DIM, generator=g)
    return out


def main() -> None:
    out_path, backend = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=300))
    device = torch.device("cuda", dist.get_rank() if backend == "nccl" else 0)
    torch.cuda.set_device(device)
    cp = init_context_parallel(dist.get_world_size())
    # the bench's tiny model, wider and one layer deeper (head_dim 32 for the position-embedded cross-attention)
    text = {**TINY_TEXT, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
            "num_attention_heads": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}}
    vision = {**TINY_VISION, "embed_dim": 64, "hidden_size": 256}
    config = VambaConfig(text_config=text, vision_config=vision, cross_attn_use_position_embeddings=True,
                         vision_mamba_mixer_config=dict(d_state=64, headdim=32, chunk_size=64, backend="fast"))
    whole = batch()
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = VambaForConditionalGeneration(config).to(device=device, dtype=dtype).train()

        def run(b, model=model):
            model.zero_grad(set_to_none=True)
            b = {k: v.to(device) for k, v in b.items()}
            b["pixel_values"] = b["pixel_values"].to(dtype)
            out = model(**b, return_logits=True)
            out.loss.backward()
            return out.logits.detach().float(), out.loss.detach().float(), {
                n: q.grad.detach().float().clone() for n, q in model.named_parameters() if q.grad is not None}

        name, tic = str(dtype).removeprefix("torch."), time.perf_counter()
        print(f"rank {cp.rank} {name}: one process ({time.perf_counter() - tic:.0f} s)", flush=True)
        model.set_context_parallel(None)
        ref = run(whole)
        print(f"rank {cp.rank} {name}: context parallel over {cp.size} ranks ({time.perf_counter() - tic:.0f} s)",
              flush=True)
        model.set_context_parallel(cp)
        got = run(shard_batch(whole, cp.rank, cp.size))
        same_params = sorted(got[2]) == sorted(ref[2])
        for key in sorted(ref[2]):  # the same names, in the same order, on every rank (a missing one: zeros)
            grad = got[2].get(key, torch.zeros_like(ref[2][key]))
            grad = grad.cpu() if backend == "gloo" else grad  # gloo reduces host memory
            dist.all_reduce(grad)
            got[2][key] = grad.to(device) / cp.size
        worst = max((rel(got[2][k], ref[2][k]), k) for k in ref[2])
        results[name] = {"logits": rel(got[0], ref[0]), "loss": rel(got[1], ref[1]), "grad_worst": worst[0],
                         "grad_worst_name": worst[1], "same_params": same_params}
        print(f"rank {cp.rank}: {name} {results[name]}", flush=True)
        del model
    if cp.rank == 0:
        out_path.write_text(json.dumps(results, indent=1))
    close_process_group()


if __name__ == "__main__":
    main()
