"""Context parallelism on one GPU (docs/context_parallel.md; ``scripts/bench_context_parallel.py``): the kernels path
against the reference, and two ranks sharing the GPU over gloo for per-rank memory and step time at 7B. Writes JSON;
exits non-zero when a check fails.

    python scripts/bench_context_parallel.py kernels --out OUT/cp_kernels.json   # [--only attention]: seconds
    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py check --out OUT/cp_check.json
    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py measure --mode stage1 --frames 2048 --out OUT/cp_stage1.json
    python scripts/bench_context_parallel.py merge --out docs/results/context_parallel_h200.json OUT/cp_*.json

- ``kernels`` (one process): the Mamba-2 state passing with mamba-ssm's chunked scan (slices scanned from zero,
  the prefix-combined states added as a correction) against the one-shot kernel scan, the kernel continued with
  ``initial_states`` and the float32 PyTorch reference, forward and backward, with packed-sample resets inside
  slices and on a cut; the conv history through causal-conv1d; the cross-attention log-sum-exp combine through
  the fused attention kernel (forward and the global-LSE backward) against one-shot attention, with masks, in
  float32 and bfloat16 (output and the gradients of q, k and v, which must also be finite).
- ``check`` (torchrun, 2 ranks on the GPU, gloo): a small VAMBA model with the CUDA kernels, float32 and bfloat16,
  context parallel vs one process: logits, loss and every gradient (mean over the ranks).
- ``measure`` (torchrun, 2 ranks on the GPU, gloo, each capped at 1/2 of its memory): the 7B model (random bf16
  weights, gradient checkpointing, frozen vision tower) at ``--frames`` 640x360 frames (299 tokens per 2 frames,
  as docs/results/efficiency_h200_cap80*.json) and 128 text tokens, one forward+backward per step: per-rank peak
  allocated memory and step time (``vamba.utils.timing.measure``: the first step warms, then ``--steps`` timed). The
  two ranks time-share one GPU: the step time bounds the overhead, it is not the speed of two GPUs.
``--device cpu --scale tiny`` runs the same logic on the CPU (a check of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from vamba.bench.build import TINY_TEXT, TINY_VISION, build, frame_grid, vamba_config
from vamba.bench.steps import set_trainable
from vamba.data.vision import PATCH_DIM
from vamba.ops import available
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header as provenance_header
from vamba.utils.timing import GIB, measure

GRID_640x360 = frame_grid(640, 360)  # patches per frame: 299 merged tokens per 2 frames


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def header(what: str, device: torch.device) -> dict:
    out = {"what": what, **provenance_header(device)}
    out["environment"]["kernels"] = available()
    return out


# -- kernels: one process ------------------------------------------------------------------------------------
def _scan_case(device, dtype, backend: str, length: int, cuts: list[int], starts: list[int], h: int, p: int, n: int,
               chunk: int) -> dict:
    from vamba.ops import causal_conv1d, ssd_scan, ssd_scan_ref
    from vamba.parallel.mamba import history_selector, incoming_coefficients, state_correction

    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype).requires_grad_(True)

    x, dt, B, C = r(1, length, h, p), r(1, length, h, scale=0.5), r(1, length, 1, n), r(1, length, 1, n)
    A = (-torch.rand(h, generator=g) * 4 - 0.5).to(device).requires_grad_(True)
    D, dt_bias = r(h).float().detach().requires_grad_(True), (torch.rand(h, generator=g) - 2).to(device).requires_grad_(True)
    seq = torch.zeros(1, length, dtype=torch.int32, device=device)
    for s in starts:
        seq[:, s:] += 1
    leaves = [x, dt, B, C, A, D, dt_bias]
    weight = torch.randn(1, length, h, p, generator=g).to(device)
    one = ssd_scan(x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, seq_idx=seq, backend=backend)
    g_one = torch.autograd.grad((one.float() * weight).sum(), leaves)
    ref = ssd_scan_ref(*(t.float() for t in (x, dt, A, B, C)), chunk, D=D, dt_bias=dt_bias, seq_idx=seq)

    bounds = [0, *cuts, length]
    work = torch.float32
    dtp = F.softplus(dt.to(work) + dt_bias.to(work))
    finals, decays, firsts, lasts, counts, parts = [], [], [], [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        y0, final = ssd_scan(x[:, a:b], dtp[:, a:b], A, B[:, a:b], C[:, a:b], chunk, D=D, dt_bias=None,
                             dt_softplus=False, seq_idx=seq[:, a:b], return_final_state=True, backend=backend)
        log_decay = torch.cumsum(dtp[:, a:b] * A, dim=1)
        finals.append(final)
        decays.append(torch.exp(log_decay[:, -1]))
        firsts.append(seq[:, a].long())
        lasts.append(seq[:, b - 1].long())
        counts.append(torch.full((1,), b - a, device=device))
        parts.append((a, b, y0, log_decay))
    final, decay = torch.stack(finals), torch.stack(decays)
    first, last, count = torch.stack(firsts), torch.stack(lasts), torch.stack(counts)
    ys, cont = [], []
    for rank, (a, b, y0, log_decay) in enumerate(parts):
        incoming = torch.einsum("rbh,rbhpn->bhpn", incoming_coefficients(decay, first, last, count, rank), final)
        first_run = seq[:, a:b] == seq[:, a:a + 1]
        ys.append((y0.to(work) + state_correction(C[:, a:b], log_decay, incoming, first_run)).to(dtype))
        # the kernel itself continued from the same incoming state (mamba-ssm's initial_states)
        cont.append(ssd_scan(x[:, a:b], dtp[:, a:b], A, B[:, a:b], C[:, a:b], chunk, D=D, dt_bias=None,
                             dt_softplus=False, seq_idx=seq[:, a:b], initial_state=incoming.detach(), backend=backend))
    sharded, continued = torch.cat(ys, 1), torch.cat(cont, 1)
    g_sharded = torch.autograd.grad((sharded.float() * weight).sum(), leaves)
    out = {"dtype": str(dtype).removeprefix("torch."), "length": length, "cuts": cuts, "sample_starts": starts,
           "sharded_vs_one_shot": rel(sharded, one), "sharded_vs_reference_fp32": rel(sharded, ref),
           "one_shot_vs_reference_fp32": rel(one, ref), "initial_states_vs_one_shot": rel(continued, one),
           "grad_sharded_vs_one_shot": {name: rel(a, b) for name, a, b in
                                        zip(("x", "dt", "B", "C", "A", "D", "dt_bias"), g_sharded, g_one)}}

    # conv history: the last W-1 inputs of the slices before, through the conv kernel's initial state
    width, ch = 4, 256
    xc = r(1, length, ch)
    wc, bc = r(ch, width).float().detach(), r(ch).float().detach()
    conv_one = causal_conv1d(xc.transpose(1, 2), wc.to(dtype), bc.to(dtype), seq_idx=seq, backend=backend)
    tails, oks, tail_seqs = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        pos = torch.arange(b - width + 1, b, device=device).clamp(min=a)
        ok = torch.arange(b - width + 1, b, device=device) >= a
        tails.append(xc[:, pos] * ok[None, :, None])
        oks.append(ok[None])
        tail_seqs.append(seq[:, pos].long())
    every = torch.stack(tails).permute(1, 0, 2, 3).reshape(1, -1, ch)
    conv_parts = []
    for rank, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        sel = history_selector(torch.stack(oks), torch.stack(tail_seqs), seq[:, a].long(), rank, every.dtype)
        history = torch.einsum("bec,bes->bcs", every, sel)
        xs = xc[:, a:b].transpose(1, 2)
        conv_parts.append(causal_conv1d(xs, wc.to(dtype), bc.to(dtype), seq_idx=seq[:, a:b], initial_state=history,
                                        backend=backend))
    out["conv_sharded_vs_one_shot"] = rel(torch.cat(conv_parts, -1), conv_one)
    return out


def _attention_case(device, dtype, nq: int, nk: int, heads: int, kv_heads: int, d: int, cuts: list[int],
                    q_seg: torch.Tensor | None, k_seg: torch.Tensor | None) -> dict:
    """The log-sum-exp combine of slices through the fused kernels (forward and global-LSE backward, as
    vamba.parallel.attention does across ranks), against one-shot attention with autograd."""
    from vamba.models.attention import attention_ref
    from vamba.parallel.attention import _bias, _expand_kv, _sdpa_backward, _sdpa_with_lse, backward_operands
    from vamba.models.attention import allowed_mask

    g = torch.Generator(device="cpu").manual_seed(1)
    q = torch.randn(1, heads, nq, d, generator=g).to(device, dtype).requires_grad_(True)
    k = torch.randn(1, kv_heads, nk, d, generator=g).to(device, dtype).requires_grad_(True)
    v = torch.randn(1, kv_heads, nk, d, generator=g).to(device, dtype).requires_grad_(True)
    grad = torch.randn(1, nq, heads, d, generator=g).to(device, dtype)
    scale = d ** -0.5
    one = attention_ref(q.float(), k.float(), v.float(), causal=False, q_seg=q_seg, k_seg=k_seg, scale=scale)
    g_one = torch.autograd.grad((one * grad.float()).sum(), [q, k, v])
    bounds = [0, *cuts, nk]
    ke, ve = _expand_kv(q, k, v)
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        ks = None if k_seg is None else k_seg[:, a:b]
        mask = allowed_mask(q_seg, ks, nq, b - a, causal=False, device=q.device)
        none_here = torch.zeros(1, 1, nq, 1, dtype=torch.bool, device=device) if mask is None else ~mask.any(-1, True)
        fwd = None if mask is None else _bias(mask | none_here, 1, heads, b - a, dtype)
        bwd = None if mask is None else _bias(mask, 1, heads, b - a, dtype)
        o, lse, state = _sdpa_with_lse(q.detach(), ke[:, :, a:b].detach().contiguous(),
                                       ve[:, :, a:b].detach().contiguous(), fwd, scale)
        lse_n = lse[..., :nq].float().masked_fill(none_here[..., 0].expand(1, heads, nq), float("-inf"))
        pieces.append((a, b, o, lse, lse_n, bwd, state))
    lse_all = torch.stack([p[4] for p in pieces])
    glob_lse = torch.logsumexp(lse_all, 0)
    read = torch.isfinite(glob_lse)
    w = torch.exp(lse_all - torch.where(read, glob_lse, torch.zeros_like(glob_lse)))
    out = sum(wi[..., None] * p[2].float() for wi, p in zip(w, pieces))  # [1, H, Nq, d]
    out = torch.where(read[..., None], out, torch.zeros_like(out))
    lse_bwd = torch.where(read, glob_lse, torch.full_like(glob_lse, float("inf")))
    dq = torch.zeros_like(q, dtype=torch.float32)
    dk, dv = torch.zeros_like(ke, dtype=torch.float32), torch.zeros_like(ve, dtype=torch.float32)
    for a, b, o, lse, _, bwd, state in pieces:
        # the global output and LSE in the kernel's own forward layout and padding, as the model passes them
        out_b, lse_b = backward_operands(out, lse_bwd, o, lse)
        dqi, dki, dvi = _sdpa_backward(grad.transpose(1, 2).contiguous(), q.detach(),
                                       ke[:, :, a:b].detach().contiguous(), ve[:, :, a:b].detach().contiguous(), bwd,
                                       out_b, lse_b, state, scale)
        dq += dqi.float()
        dk[:, :, a:b] += dki.float()
        dv[:, :, a:b] += dvi.float()
    rep = heads // kv_heads
    dk = dk.view(1, kv_heads, rep, nk, d).sum(2)
    dv = dv.view(1, kv_heads, rep, nk, d).sum(2)
    return {"dtype": str(dtype).removeprefix("torch."), "masked": q_seg is not None, "cuts": cuts,
            "combined_vs_one_shot": rel(out.transpose(1, 2), one),
            "grad_vs_one_shot": {"q": rel(dq, g_one[0]), "k": rel(dk, g_one[1]), "v": rel(dv, g_one[2])},
            "grad_finite": {"q": bool(dq.isfinite().all()), "k": bool(dk.isfinite().all()),
                            "v": bool(dv.isfinite().all())}}


def kernels(args) -> int:
    device = torch.device(args.device)
    tiny = args.scale == "tiny"
    backend = "fast" if device.type == "cuda" else "reference"
    result = header("context parallelism: sharded kernels path vs one-shot and reference", device)
    result.update(backend=backend, scan=[], attention=[])
    h, p, n, chunk = (8, 16, 16, 64) if tiny else (112, 64, 128, 256)  # 7B: d_inner 7168 / headdim 64
    length = 600 if tiny else 3000
    cuts, starts = ([200, 430], [150, 430]) if tiny else ([1000, 2100], [700, 2100, 2600])
    for dtype in (torch.float32, torch.bfloat16) if args.only in (None, "scan") else ():
        result["scan"].append(_scan_case(device, dtype, backend, length, cuts, starts, h, p, n, chunk))
        print(json.dumps(result["scan"][-1]), flush=True)
    nq, nk = (24, 300) if tiny else (150, 6000)  # not a multiple of 32: the CUDA kernel's LSE has padded rows
    heads, kv, d = (4, 2, 16) if tiny else (28, 4, 128)
    q_seg = torch.zeros(1, nq, dtype=torch.long, device=device)
    q_seg[:, nq // 2:] = 1  # two packed samples; the second's video starts in the second slice
    q_seg[:, -3:] = 2  # a text-only sample
    k_seg = torch.zeros(1, nk, dtype=torch.long, device=device)
    k_seg[:, nk // 3:] = 1
    k_seg[:, -5:] = -1  # padding
    for dtype in (torch.float32, torch.bfloat16) if args.only in (None, "attention") else ():  # bf16: training's
        for qs, ks in ((None, None), (q_seg, k_seg)):
            result["attention"].append(_attention_case(device, dtype, nq, nk, heads, kv, d, [nk // 2], qs, ks))
            print(json.dumps(result["attention"][-1]), flush=True)
    limits = {"float32": 1e-3, "bfloat16": 3e-2}  # per dtype; the kernels' own one-shot vs reference sets the scale
    failed = []
    for case in result["scan"]:
        lim = limits[case["dtype"]]
        for key in ("sharded_vs_one_shot", "initial_states_vs_one_shot", "conv_sharded_vs_one_shot"):
            if not case[key] < lim:
                failed.append(f"scan {case['dtype']} {key}={case[key]:.3g}")
        failed += [f"scan {case['dtype']} grad {k}={v:.3g}" for k, v in case["grad_sharded_vs_one_shot"].items()
                   if not v < 10 * lim]
    for case in result["attention"]:
        lim = limits[case["dtype"]]
        if not case["combined_vs_one_shot"] < lim:
            failed.append(f"attention {case['dtype']} masked={case['masked']} output={case['combined_vs_one_shot']:.3g}")
        failed += [f"attention {case['dtype']} masked={case['masked']} grad {k}={v:.3g}"
                   for k, v in case["grad_vs_one_shot"].items() if not v < 10 * lim]
        failed += [f"attention {case['dtype']} masked={case['masked']} grad {k} not finite"
                   for k, ok in case["grad_finite"].items() if not ok]
    if not result["scan"] and not result["attention"]:
        failed.append("no case ran")
    result["limits"] = limits
    result["failed"] = failed
    atomic_write_json(Path(args.out), result)
    print("FAILED: " + "; ".join(failed) if failed else "kernels: all checks passed", flush=True)
    return 1 if failed else 0


# -- two ranks -----------------------------------------------------------------------------------------------
def _init_ranks(device_kind: str):
    import torch.distributed as dist

    from vamba.parallel.groups import init_context_parallel

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    if device_kind == "cuda":
        torch.cuda.set_device(0)  # both ranks on the one GPU
        torch.cuda.set_per_process_memory_fraction(1.0 / dist.get_world_size(), 0)
    return dist, init_context_parallel(dist.get_world_size())


def check(args) -> int:
    from vamba.data.shard import shard_batch
    from vamba.models import VambaConfig, VambaForConditionalGeneration
    from vamba.utils.distributed import close_process_group

    dist, cp = _init_ranks(args.device)
    device = torch.device(args.device)
    # the bench's tiny model, wider and one layer deeper (head_dim 32 for the position-embedded cross-attention)
    text = {**TINY_TEXT, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
            "num_attention_heads": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}}
    vision = {**TINY_VISION, "embed_dim": 64, "hidden_size": 256}
    backend = "fast" if device.type == "cuda" else "reference"
    config = VambaConfig(text_config=text, vision_config=vision, cross_attn_use_position_embeddings=True,
                         vision_mamba_mixer_config=dict(d_state=64, headdim=32, chunk_size=64, backend=backend))
    g = torch.Generator().manual_seed(0)
    # one packed row: a long video cut mid-sample, a text-only sample, an image + a video
    grids = [[(40, 8, 8)], [], [(1, 8, 8), (6, 4, 8)]]
    lengths = [20, 9, 14]
    ids = torch.randint(3, 512, (1, sum(lengths)), generator=g)
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids),
             "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
             "text_seq_idx": torch.cat([torch.full((n,), s, dtype=torch.int32) for s, n in enumerate(lengths)])[None],
             "grid_thw": torch.tensor([gr for row in grids for gr in row]),
             "visual_row": torch.zeros(3, dtype=torch.long),
             "visual_seq_idx": torch.tensor([s for s, row in enumerate(grids) for _ in row])}
    batch["pixel_values"] = torch.randn(int(batch["grid_thw"].prod(-1).sum()), PATCH_DIM, generator=g)
    result = header("context parallelism, 2 ranks vs 1 process, small model with the CUDA kernels", device)
    result.update(world_size=cp.size, cases=[])
    failed = []
    for dtype in (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,):
        torch.manual_seed(0)
        model = VambaForConditionalGeneration(config).to(device=device, dtype=dtype).train()

        def run(b):
            model.zero_grad(set_to_none=True)
            b = {k: v.to(device) for k, v in b.items()}
            b["pixel_values"] = b["pixel_values"].to(dtype)
            out = model(**b, return_logits=True)
            out.loss.backward()
            return out.logits.detach().float(), out.loss.detach().float(), {
                n: q.grad.detach().float().clone() for n, q in model.named_parameters() if q.grad is not None}

        name, tic = str(dtype).removeprefix("torch."), time.perf_counter()

        def progress(what: str) -> None:  # per step, so that a hang shows where
            print(f"rank {cp.rank} {name}: {what} ({time.perf_counter() - tic:.0f} s)", flush=True)

        progress("one process, forward + backward")
        model.set_context_parallel(None)
        ref = run(batch)
        progress(f"context parallel over {cp.size} ranks, forward + backward")
        model.set_context_parallel(cp)
        got = run(shard_batch(batch, cp.rank, cp.size))
        progress("mean of the gradients over the ranks")
        same_params = sorted(got[2]) == sorted(ref[2])
        for key in sorted(ref[2]):  # the same names, in the same order, on every rank (a missing one: zeros)
            host = got[2].get(key, torch.zeros_like(ref[2][key])).cpu()  # gloo reduces host memory
            dist.all_reduce(host)
            got[2][key] = host.to(device) / cp.size
        worst = max((rel(got[2][k], ref[2][k]), k) for k in ref[2])
        case = {"dtype": name, "logits": rel(got[0], ref[0]), "loss": rel(got[1], ref[1]),
                "grad_worst": worst[0], "grad_worst_name": worst[1], "same_params": same_params}
        lim = 1e-3 if dtype == torch.float32 else 5e-2
        if not (case["same_params"] and case["logits"] < lim and case["loss"] < lim and case["grad_worst"] < 20 * lim):
            failed.append(f"{case['dtype']}: {case}")
        result["cases"].append(case)
        print(f"rank {cp.rank}: {case}", flush=True)
        del model
    result["failed"] = failed
    if cp.rank == 0:
        atomic_write_json(Path(args.out), result)
    close_process_group()
    return 1 if failed else 0


def measure_steps(args) -> int:
    from vamba.models import VambaForConditionalGeneration
    from vamba.utils.distributed import close_process_group

    dist, cp = _init_ranks(args.device)
    device = torch.device(args.device)
    result = header(f"context parallelism: {cp.size} ranks on one GPU, {args.mode} step at {args.frames} frames",
                    device)
    h, w = GRID_640x360 if args.scale != "tiny" else (4, 4)
    patches = args.frames // 2
    plan = [patches * r // cp.size for r in range(cp.size + 1)]  # equal shares of temporal patches
    t0, t1 = plan[cp.rank], plan[cp.rank + 1]
    result.update(mode=args.mode, frames=args.frames, world_size=cp.size, scale=args.scale, text_tokens=args.text,
                  frame_size="640x360", tokens_per_2_frames=(h // 2) * (w // 2),
                  video_tokens=patches * (h // 2) * (w // 2), local_temporal_patches=t1 - t0,
                  memory_cap_gib=(torch.cuda.get_device_properties(0).total_memory / cp.size / GIB
                                  if device.type == "cuda" else None))
    status = "ok"
    try:
        started = time.perf_counter()
        print(f"rank {cp.rank}: building the {args.scale} model ({args.mode}, {args.frames} frames, "
              f"temporal patches {t0}..{t1})", flush=True)
        model = build_model(args.scale, device)
        result["build_s"] = round(time.perf_counter() - started, 1)
        result["trainable_parameters"] = set_trainable(model, "vamba", args.mode)
        model.gradient_checkpointing_enable()
        model.train()
        model.set_context_parallel(cp)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, min(150000, model.config.text_config.vocab_size - 5), (1, args.text), generator=g)
        ids = ids.to(device)
        pixels = torch.randn((t1 - t0) * h * w, PATCH_DIM, generator=torch.Generator().manual_seed(1 + cp.rank))
        pixels = pixels.to(device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        inputs = dict(input_ids=ids, labels=ids, pixel_values=pixels,
                      grid_thw=torch.tensor([[t1 - t0, h, w]], device=device),
                      visual_row=torch.zeros(1, dtype=torch.long, device=device),
                      visual_seq_idx=torch.zeros(1, dtype=torch.long, device=device),
                      visual_t_offset=torch.tensor([t0], device=device))

        def step() -> None:  # both ranks start and end each step together: the wall time of the slower one
            dist.barrier()
            model(**inputs).loss.backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dist.barrier()

        timed = measure(step, device, reps=args.steps, warmup=1)  # the first step warms (Triton compilation)
        if timed["status"] != "ok":
            status = timed["status"]
            result["error"] = timed.get("error", "out of memory")
        else:
            times = [timed["first_ms"] / 1e3] + [ms / 1e3 for ms in timed["all_ms"]]
            print(f"rank {cp.rank} steps: " + ", ".join(f"{t:.2f} s" for t in times), flush=True)
            result["step_s"] = [round(t, 3) for t in times]
            result["warm_step_s"] = round(min(times[1:]), 3)
            if device.type == "cuda":
                result.update({k: round(timed[k], 2) for k in ("start_gib", "peak_gib", "reserved_gib")})
    except torch.cuda.OutOfMemoryError as e:
        status = "oom"
        result["error"] = str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 (recorded, then the exit code says it failed)
        status = "error"
        result["error"] = "".join(traceback.format_exception(e))[-3000:]
    if args.scale == "7b":  # the per-GPU memory model's prediction for this rank (docs/context_parallel.md)
        from vamba.parallel.memory import vamba_7b

        result["predicted_peak_gib"] = round(vamba_7b().peak_gib(result["video_tokens"], cp.size, args.mode), 2)
    result["status"] = status
    out = Path(args.out)
    atomic_write_json(out.with_name(f"{out.stem}.rank{cp.rank}{out.suffix}"), result)
    print(f"rank {cp.rank}: {status} {result.get('peak_gib')} GiB {result.get('warm_step_s')} s", flush=True)
    if status == "ok":
        close_process_group()
    return 0 if status == "ok" else 1


def build_model(scale: str, device: torch.device):
    from vamba.models import VambaForConditionalGeneration

    torch.manual_seed(0)  # the same weights on every rank
    if scale == "tiny":
        return VambaForConditionalGeneration(vamba_config("tiny", "auto")).to(device)
    # random weights made on the GPU in bf16, no float32 copy
    return build(VambaForConditionalGeneration, vamba_config(scale, "fast"), device, torch.bfloat16).train()


# -- merge ---------------------------------------------------------------------------------------------------
def merge(args) -> int:
    parts = {}
    for path in args.inputs:
        try:
            parts[Path(path).stem] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            parts[Path(path).stem] = {"status": "missing", "error": str(e)}
    atomic_write_json(Path(args.out), {"what": "context parallelism on one GPU (scripts/bench_context_parallel.py)",
                                       "parts": parts})
    print(f"wrote {args.out}: {sorted(parts)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["kernels", "check", "measure", "merge"])
    p.add_argument("inputs", nargs="*", help="merge: the JSON files")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--scale", default="7b", choices=["7b", "2b", "tiny"])
    p.add_argument("--mode", default="stage1", choices=["stage1", "train", "train_shared"])
    p.add_argument("--frames", type=int, default=2048)
    p.add_argument("--text", type=int, default=128)
    p.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step")
    p.add_argument("--only", choices=["scan", "attention"], help="kernels: run only the Mamba-2 scan cases or only "
                   "the attention combine cases (the latter needs no Triton compilation: seconds on a GPU)")
    args = p.parse_intermixed_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --device cpu --scale tiny for a CPU check of the script)", file=sys.stderr)
        return 2
    return {"kernels": kernels, "check": check, "measure": measure_steps, "merge": merge}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
