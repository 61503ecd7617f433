"""One torchrun process of the context-parallel equality tests (tests/parallel/test_context_parallel.py).

Every rank builds the same tiny float64 VAMBA model and batches, computes the single-process reference itself, then
the same forward and backward with the video sharded over all ranks (one CP group); rank 0 writes, per case, the
largest relative differences of logits, loss and every parameter's gradient (mean over the group, the convention
of vamba.parallel.comm) to the JSON file given as argv[1].
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.models.vamba_tiny import pack, vamba_config, video_batch  # noqa: E402
from vamba.data.shard import shard_batch  # noqa: E402
from vamba.models import VambaForConditionalGeneration  # noqa: E402
from vamba.parallel.groups import init_context_parallel  # noqa: E402
from vamba.utils.distributed import close_process_group  # noqa: E402


def sample(n_text: int, grids: list[tuple[int, int, int]], seed: int) -> dict[str, torch.Tensor]:
    return video_batch([n_text], [grids], seed=seed)


def batches() -> dict[str, dict[str, torch.Tensor]]:
    return {
        # one video of 7 temporal patches (28 tokens): every cut falls inside the sample
        "one_video": sample(9, [(7, 4, 4)], seed=1),
        # packed: 8 | text-only | 4 + 4 | 16 tokens: sample boundaries at 1/4 and 1/2 of the tokens (rank borders
        # at CP 2 and 4), one inside rank 0 at CP 2, items of one sample split by a border, a border mid-sample
        "packed": pack([sample(5, [(2, 4, 4)], seed=2), sample(4, [], seed=3), sample(6, [(1, 4, 4), (2, 2, 4)], seed=4),
                        sample(7, [(4, 4, 4)], seed=5)]),
        # packed with 1-token temporal patches (slices shorter than the conv's history) and boundaries inside ranks
        "packed_small": pack([sample(3, [(1, 4, 4)], seed=6), sample(4, [(3, 2, 2)], seed=7),
                              sample(5, [(3, 4, 4)], seed=8), sample(3, [(2, 2, 2)], seed=9)]),
        # two padded rows of different video lengths, and a text-only row
        "padded_rows": video_batch([8, 6, 5], [[(3, 4, 4)], [(6, 2, 4)], []], seed=10),
        # no video at all: every rank runs the vision tower on its dummy item
        "text_only": video_batch([6], [[]], seed=11),
    }


CONFIGS = {
    "alpha_rope_eager": dict(use_alpha_balancing=True, cross_attn_use_position_embeddings=True,
                             attention_backend="eager"),
    "plain_sum_layernorm_fused": dict(use_alpha_balancing=False, cross_attn_use_layer_norm=True,
                                      cross_attn_use_position_embeddings=True, attention_backend="sdpa"),
}


def build(config: dict) -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config(**config)).double()
    with torch.no_grad():  # make zero-initialised biases and alpha count
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.endswith(".alpha"):
                p.uniform_(0.1, 0.9)
    return model


def run(model, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    batch = {k: v.double() if k == "pixel_values" else v for k, v in batch.items()}
    out = model(**batch, return_logits=True)
    # a second objective that weighs every logit, so that each position's gradient path is checked
    weight = torch.linspace(-1, 1, out.logits.numel(), dtype=out.logits.dtype).view_as(out.logits)
    (out.loss + (out.logits * weight).sum() * 1e-2).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), out.loss.detach(), grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


# (config, batches, gradient checkpointing); "--quick" runs the last group only
CASES = [("alpha_rope_eager", list(batches()), False), ("plain_sum_layernorm_fused", list(batches()), False),
         ("alpha_rope_eager", ["packed"], True), ("plain_sum_layernorm_fused", ["packed_small", "padded_rows"], False)]


def main() -> None:
    out_path = Path(sys.argv[1])
    cases = CASES[-1:] if "--quick" in sys.argv else CASES[:-1]
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    cp = init_context_parallel(dist.get_world_size())
    results = {}
    all_batches = batches()
    for cname, names, checkpointing in cases:
        model = build(CONFIGS[cname])
        if checkpointing:
            model.gradient_checkpointing_enable()
            model.train()
            cname += "+checkpointing"
        for bname in names:
            batch = all_batches[bname]
            model.set_context_parallel(None)
            ref_logits, ref_loss, ref_grads = run(model, batch)
            model.set_context_parallel(cp)
            logits, loss, grads = run(model, shard_batch(batch, cp.rank, cp.size))
            for g in grads.values():
                dist.all_reduce(g, group=cp.group)
                g /= cp.size
            # A_log's gradient passes a float32 cast (the mixer computes A = -exp(A_log.float()), as mamba-ssm does),
            # so its per-rank gradients are rounded to float32 before the mean: compared on its own
            worst = max(((rel(grads[n], ref_grads[n]), n) for n in ref_grads if not n.endswith("A_log")),
                        default=(0.0, ""))
            a_log = max((rel(grads[n], ref_grads[n]) for n in ref_grads if n.endswith("A_log")), default=0.0)
            results[f"{cname}/{bname}"] = {
                "logits": rel(logits, ref_logits), "loss": rel(loss, ref_loss), "grad": worst[0], "grad_name": worst[1],
                "grad_A_log": a_log,
                "same_params": sorted(grads) == sorted(ref_grads), "n_grads": len(ref_grads),
                "local_tokens": int(shard_batch(batch, cp.rank, cp.size)["grid_thw"].prod(-1).sum()) // 4,
            }
    if dist.get_rank() == 0:
        out_path.write_text(json.dumps(results, indent=1))
    close_process_group()


if __name__ == "__main__":
    main()
