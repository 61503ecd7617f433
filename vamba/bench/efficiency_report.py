"""The efficiency benchmark's report: summary tables, its goals, plots (``vamba bench report_only=JSON``).

Reads only the results JSON that ``vamba.bench.efficiency`` writes, so a cut-short run can be reported and
the committed JSON re-rendered without a GPU.
"""
from __future__ import annotations

import json
from pathlib import Path

from vamba.utils.io import atomic_write_text

HOUR_FRAMES = 3600  # one hour at 1 fps (a goal), added to VAMBA's prefill sweep
# The starting point the benchmark was built to improve on: transformers' Qwen2-VL-7B on an H100 (SDPA, bf16, LLM
# part only), as measured before VAMBA's efficiency work; the summary checks the baseline against it.
REFERENCE_QWEN2_VL_7B_H100 = {"prefill_1024": {"s": 12.6, "gib": 44.0}, "prefill_oom": 2048,
                   "train_512": {"s": 17.0, "gib": 52.5}, "train_oom": 1024}


def ok_rows(rows: list[dict], model: str, mode: str) -> list[dict]:
    return [r for r in rows if r["model"] == model and r["mode"] == mode and r.get("status") == "ok"]


def max_fit(rows: list[dict], model: str, mode: str) -> int | None:
    fits = [r["frames"] for r in ok_rows(rows, model, mode)]
    return max(fits) if fits else None


def first_oom(rows: list[dict], model: str, mode: str) -> int | None:
    ooms = [r["frames"] for r in rows if r["model"] == model and r["mode"] == mode and r.get("status") == "oom"]
    return min(ooms) if ooms else None


def at(rows: list[dict], model: str, mode: str, frames: int) -> dict | None:
    return next((r for r in ok_rows(rows, model, mode) if r["frames"] == frames), None)


def goals(result: dict) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) for the benchmark's goals (docs/bench.md, "Efficiency benchmark")."""
    rows = result["rows"]
    out = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    v, q = at(rows, "vamba", "prefill", 1024), at(rows, "qwen2_vl", "prefill", 1024)
    goal = "prefill at 1024 frames >= 5x faster (aim 6x)"
    if v and q:
        ratio, llm = q["total_ms"] / v["total_ms"], q["llm_ms"] / max(v["llm_ms"], 1e-9)
        aim = "; aim met" if ratio >= 6 else "; aim 6x not met"
        out.append((goal, f"{ratio:.2f}x (VAMBA {v['total_ms'] / 1e3:.2f} s, Qwen2-VL {q['total_ms'] / 1e3:.2f} s; "
                          f"LLM part {llm:.2f}x{aim})", verdict(ratio >= 5)))
    elif v and first_oom(rows, "qwen2_vl", "prefill") == 1024:
        out.append((goal, "Qwen2-VL out of memory at 1024", verdict(True)))
    else:
        out.append((goal, "-", verdict(None)))
    hour = at(rows, "vamba", "prefill", HOUR_FRAMES)
    tried = any(r["model"] == "vamba" and r["mode"] == "prefill" and r["frames"] == HOUR_FRAMES for r in rows)
    text = (f"{hour['total_ms'] / 1e3:.2f} s (vision {hour['vision_ms'] / 1e3:.2f} + LLM {hour['llm_ms'] / 1e3:.2f}; "
            f"aim 10 s {'met' if hour['total_ms'] <= 10e3 else 'not met'})" if hour else "-")
    out.append((f"the hour ({HOUR_FRAMES} frames) prefilled in <= 12 s (aim 10 s)", text,
                verdict(hour["total_ms"] <= 12e3 if hour else (False if tried else None))))
    for part, key in (("vision tower", "vision_mfu"), ("VAMBA LLM prefill", "llm_mfu")):
        points = [r for r in ok_rows(rows, "vamba", "prefill") if r["frames"] <= HOUR_FRAMES and r.get(key)]
        if points:
            worst = min(points, key=lambda r: r[key])
            text = ", ".join(f"{r['frames']}: {100 * r[key]:.0f}%" for r in sorted(points, key=lambda r: r["frames"]))
            out.append((f"{part} >= 55% of the matmul rate at every prefill point up to {HOUR_FRAMES} frames",
                        text, verdict(worst[key] >= 0.55)))
    train = [r for r in rows if r["model"] == "vamba" and r["mode"] == "train" and r["frames"] == 1024]
    cap = result.get("memory_cap_gib")
    goal = f"whole-LLM training (train) at 1024 frames within {cap or 'the device'} GiB"
    if train and train[0].get("status") == "ok":
        out.append((goal, f"{train[0]['total_ms'] / 1e3:.2f} s, peak {train[0].get('peak_gib', float('nan')):.1f} "
                          f"GiB", verdict(True)))
    elif train and train[0].get("status") == "oom":
        out.append((goal, "out of memory", verdict(False)))
    else:
        out.append((goal, "-" if not train else train[0].get("status", "-"), verdict(None)))
    for mode in ("train", "train_shared", "train_offload"):
        v, q = at(rows, "vamba", mode, 512), at(rows, "qwen2_vl", "train", 512)
        goal = f"training-step memory at 512 frames <= 1/2 ({mode})"
        if v and q and "peak_gib" in v:
            total = v["peak_gib"] / q["peak_gib"]
            act = v["peak_above_start_gib"] / max(q["peak_above_start_gib"], 1e-9)
            out.append((goal, f"total peak {total:.2f}x, above weights+inputs {act:.2f}x", verdict(total <= 0.5)))
        elif any(r["mode"] == mode for r in rows):
            out.append((goal, "-", verdict(None)))
    for mode in ("prefill", "train", "train_shared", "train_offload"):
        if not any(r["mode"] == mode for r in rows):
            continue
        base = baseline_mode(mode)
        fv, fq = max_fit(rows, "vamba", mode), max_fit(rows, "qwen2_vl", base)
        v_bounded, q_bounded = first_oom(rows, "vamba", mode) is not None, first_oom(rows, "qwen2_vl", base) is not None
        if fv and fq:
            # A model that never ran out of memory fits at least its largest measured point ("+").
            text = (f"VAMBA {fv}{'' if v_bounded else '+'} vs Qwen2-VL {fq}{'' if q_bounded else '+'} frames "
                    f"({fv / fq:.1f}x)")
            conclusive = q_bounded and (v_bounded or fv >= 4 * fq)
            out.append((f">= 4x more frames fit ({mode})", text, verdict(fv >= 4 * fq if conclusive else None)))
        else:
            out.append((f">= 4x more frames fit ({mode})", "-", verdict(None)))
    measured = f"prefill {hour['total_ms'] / 1e3:.1f} s, {hour.get('peak_gib', float('nan')):.1f} GiB" if hour else "-"
    reply = at(rows, "vamba", "answer", HOUR_FRAMES)
    if hour and reply:
        measured += (f"; with a {reply['answer_tokens']}-token answer {reply['total_ms'] / 1e3:.1f} s "
                     f"({reply['decode_tokens_per_s']:.0f} tokens/s), {reply.get('peak_gib', float('nan')):.1f} GiB")
    from_file = at(rows, "vamba", "answer_file", HOUR_FRAMES)
    if from_file:
        measured += (f"; from an mp4 end to end: first token after {from_file['time_to_first_token_ms'] / 1e3:.1f} s, "
                     f"{from_file['decode_tokens_per_s']:.0f} tokens/s, {from_file.get('peak_gib', float('nan')):.1f} "
                     f"GiB, the GPU waited {from_file['host_wait_s']:.2f} s for frames")
    out.append((f"an hour at 1 fps ({HOUR_FRAMES} frames) answered on one GPU", measured,
                verdict(bool(hour) if tried else None)))
    return out


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


MODES = {"prefill": "Prefill (video + question)",
         "train": "Training step (fwd+bwd, checkpointing; trainable: each model's LLM)",
         "train_shared": "Training step, VAMBA training only the weights it shares with Qwen2-VL's LLM "
                         "(baseline: Qwen2-VL's training step)",
         "train_offload": "Training step, VAMBA with each checkpointed layer's inputs in host memory "
                          "(model.offload_checkpoints; baseline: Qwen2-VL's training step)",
         "stage1": "Stage-1 training step, VAMBA training cross-attention, Mamba-2 blocks and alpha (baseline: "
                   "Qwen2-VL's training step)"}
TRAIN_MODES = ("train", "train_shared", "train_offload", "stage1")


def baseline_mode(mode: str) -> str:
    return "train" if mode in ("train_shared", "train_offload", "stage1") else mode


def summary_markdown(result: dict) -> str:
    rows = result["rows"]
    meta = result["setup"]
    models = result.get("models", {})
    lines = [f"# Efficiency: VAMBA vs Qwen2-VL ({meta['scale']}, {result['device']})", "",
             f"{result['date']}; {meta['frame_size']} frames -> {meta['tokens_per_2_frames']} merged tokens per 2 "
             f"frames; dtype {meta['dtype']}; question {meta['question_tokens']} tokens, training text "
             f"{meta['train_tokens']} tokens (loss on the text); VAMBA prefill streams {meta['piece_frames']} frames "
             f"per piece; vision tower frozen in training. Times: whole step (vision tower / LLM), seconds. "
             f"Memory: peak allocated, GiB (weights included). Measured {meta['dtype']} matmul rate: "
             f"{result['matmul_tflops']:.3g} TFLOP/s."
             + (f" GPU memory capped at {result['memory_cap_gib']} GiB of {result['device_memory_gib']} GiB "
                f"(torch.cuda.set_per_process_memory_fraction), so what fits is what fits on that smaller device."
                if result.get("memory_cap_gib") else ""), ""]
    if models:
        lines += ["| model | parameters | vision tower | trainable (" + " / ".join(TRAIN_MODES) + ") |",
                  "|---|---|---|---|"]
        for name, info in models.items():
            t = info.get("trainable", {})
            lines.append(f"| {name} | {_count(info['parameters'])} | {_count(info['vision'])} | "
                         + " / ".join(_count(t[k]) if k in t else "-" for k in TRAIN_MODES)
                         + " |")
        lines.append("")
    for mode, title in MODES.items():
        if not any(r["mode"] == mode for r in rows):
            continue
        lines += [f"## {title}", "",
                  "| frames | video tokens | VAMBA s (vision/LLM) | VAMBA GiB | Qwen2-VL s (vision/LLM) | Qwen2-VL GiB "
                  "| time ratio | memory ratio | VAMBA LLM MFU | VAMBA vision MFU |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        frames = sorted({r["frames"] for r in rows if r["mode"] in (mode, baseline_mode(mode))})
        for n in frames:
            cells = [str(n), str(next(r["video_tokens"] for r in rows if r["frames"] == n))]
            pair = []
            for model, m in (("vamba", mode), ("qwen2_vl", baseline_mode(mode))):
                r = next((r for r in rows if r["model"] == model and r["mode"] == m and r["frames"] == n), None)
                pair.append(r)
                if r is None:
                    cells += ["-", "-"]
                elif r.get("status") != "ok":
                    cells += [r.get("status", "-"), "-"]
                else:
                    cells += [f"{r['total_ms'] / 1e3:.3f} ({r['vision_ms'] / 1e3:.3f}/{r['llm_ms'] / 1e3:.3f})",
                              f"{r['peak_gib']:.1f}" if "peak_gib" in r else "-"]
            v, q = pair
            both = v is not None and q is not None and v.get("status") == q.get("status") == "ok"
            cells.append(f"{q['total_ms'] / v['total_ms']:.2f}x" if both else "-")
            cells.append(f"{v['peak_gib'] / q['peak_gib']:.2f}" if both and "peak_gib" in v else "-")
            for key in ("llm_mfu", "vision_mfu"):
                mfu = v.get(key) if v is not None and v.get("status") == "ok" else None
                cells.append(f"{100 * mfu:.0f}%" if mfu is not None else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    answers = [r for r in rows if r["mode"] == "answer_file"]
    if answers:
        lines += ["## An hour answered end to end from a video file", "",
                  "decode -> resize -> patches -> vision tower -> LLM (VambaChat.encode), then the question prefilled "
                  "and the answer decoded greedily; times from the first frame decoded.", "",
                  "| frames | first token s | encode s (vision) | decode tokens/s | GiB | host decode / resize s "
                  "(threads) | GPU waited for frames s |", "|---|---|---|---|---|---|---|"]
        for r in answers:
            if r.get("status") != "ok":
                lines.append(f"| {r['frames']} | {r.get('status')} {r.get('error', '')} | | | | | |")
                continue
            lines.append(f"| {r['frames']} | {r['time_to_first_token_ms'] / 1e3:.2f} | {r['encode_ms'] / 1e3:.2f} "
                         f"({r.get('vision_ms', 0) / 1e3:.2f}) | {r['decode_tokens_per_s']:.1f} | "
                         f"{r.get('peak_gib', float('nan')):.1f} | {r['host_decode_s']:.2f} / {r['host_resize_s']:.2f} "
                         f"| {r['host_wait_s']:.2f} ({100 * r['host_wait_share']:.0f}% of the encoding) |")
        lines.append("")
    offloaded = [r for r in ok_rows(rows, "vamba", "train_offload") if "host_bytes" in r]
    if offloaded:
        lines += ["Host memory per offloading step (the checkpointed layers' inputs): "
                  + ", ".join(f"{r['host_bytes'] / 2**30:.1f} GiB at {r['frames']} frames" for r in offloaded) + ".", ""]
    if meta["scale"] == "7b":
        # "issue_reference_qwen2_vl_7b_h100": the key of JSON files written before it was renamed
        ref = result.get("reference_qwen2_vl_7b_h100") or result.get("issue_reference_qwen2_vl_7b_h100") or \
            REFERENCE_QWEN2_VL_7B_H100
        seen = []
        for mode, n in (("prefill", 1024), ("train", 512)):
            r = at(rows, "qwen2_vl", mode, n)
            if r is not None:
                want = ref[f"{mode}_{n}"]
                seen.append(f"{mode} {n} frames: LLM part {r['llm_ms'] / 1e3:.1f} s, peak {r.get('peak_gib', 0):.1f} "
                            f"GiB (reference: {want['s']} s, {want['gib']} GiB)")
        if seen:
            lines += ["Baseline check against the reference Qwen2-VL-7B measurement (H100): " + "; ".join(seen)
                      + ".", ""]
    mfu = []
    for mode in ("prefill", "train", "train_shared", "train_offload", "stage1"):
        best = max((r for r in ok_rows(rows, "vamba", mode) if r.get("llm_mfu") is not None),
                   key=lambda r: r["frames"], default=None)
        if best is not None:
            mfu.append(f"{mode} {100 * best['llm_mfu']:.1f}% at {best['frames']} frames")
    if mfu:
        lines += [f"VAMBA LLM model FLOPs utilisation at the largest measured point: {'; '.join(mfu)} "
                  f"(of the measured {result['matmul_tflops']:.3g} TFLOP/s).", ""]
    lines += ["## Goals", "", "| goal | measured | |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {v} |" for g, m, v in goals(result)]
    lines += ["", "Time ratio = Qwen2-VL time / VAMBA time (higher: VAMBA faster); memory ratio = VAMBA peak / "
              "Qwen2-VL peak (lower: VAMBA smaller); MFU = the VAMBA LLM part's model FLOPs / its time / the measured "
              "matmul rate. Random weights; every field is in the JSON.", ""]
    return "\n".join(lines)


def plot(result: dict, out_dir: Path, tag: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    paths = []
    panels = {"prefill": [("vamba", "prefill", "tab:blue", "-", "VAMBA (streaming)"),
                          ("qwen2_vl", "prefill", "tab:red", "-", "Qwen2-VL")],
              "train": [("vamba", "train", "tab:blue", "-", "VAMBA"),
                        ("vamba", "train_shared", "tab:cyan", "-.", "VAMBA, shared weights trained"),
                        ("vamba", "train_offload", "tab:green", "--", "VAMBA, layer inputs in host memory"),
                        ("qwen2_vl", "train", "tab:red", "-", "Qwen2-VL")]}
    for quantity, ylabel in (("memory", "peak memory (GiB)"), ("time", "time (s)")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, (panel, series) in zip(axes, panels.items()):
            ooms = []
            for model, mode, colour, style, label in series:
                # by frame count: points= measures in the goals' order, not along the axis
                good = sorted(ok_rows(rows, model, mode), key=lambda r: r["frames"])
                if quantity == "memory":
                    good = [r for r in good if "peak_gib" in r]
                ys = [r["peak_gib"] if quantity == "memory" else r["total_ms"] / 1e3 for r in good]
                xs = [r["frames"] for r in good]
                if xs:
                    ax.plot(xs, ys, "o" + style, color=colour, label=label)
                    if quantity == "time":
                        ax.plot(xs, [max(r["llm_ms"], 1e-3) / 1e3 for r in good], ":", color=colour, alpha=0.7,
                                label=f"{label}: LLM part")
                if (oom := first_oom(rows, model, mode)) is not None:
                    ooms.append((oom, colour, label))
            for oom, colour, label in ooms:
                ax.axvline(oom, color=colour, linestyle="--", alpha=0.5, linewidth=1)
                ax.text(oom, ax.get_ylim()[1], f" {label}: out of memory", color=colour, rotation=90, va="top",
                        fontsize=7)
            room = result.get("memory_cap_gib") or result.get("device_memory_gib")
            if quantity == "memory" and room:
                ax.axhline(room, color="grey", linestyle="--", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("frames")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{panel} ({result['setup']['scale']}, {result['device']})", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"efficiency_{tag}_{quantity}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(json_path: Path) -> str:
    """Summary markdown and plots next to a results JSON (also for a run that was cut short)."""
    result = json.loads(Path(json_path).read_text())
    tag = Path(json_path).stem.removeprefix("efficiency_")
    summary = summary_markdown(result)
    atomic_write_text(Path(json_path).with_suffix(".md"), summary)
    plot(result, Path(json_path).parent, tag)
    return summary


def fp8_markdown(bf16: dict, fp8: dict) -> str:
    """The FP8 column beside bf16 (docs/fp8.md, "Speed"): two results of ``vamba bench``, one with ``fp8=none`` and
    one with ``fp8=all`` made in the same call, row by row (mode, frames), with each row's floor: its FLOPs
    (``vision_tflop + llm_tflop``) at the measured bf16 and FP8 GEMM rates. The FP8 floor counts every FLOP at the
    FP8 rate, although attention and the SSD scan stay in bf16: a bound, not a prediction."""
    rate16, rate8 = bf16["matmul_tflops"], fp8.get("fp8_matmul_tflops")
    lines = [f"# FP8 beside bf16 ({fp8['device']}, {fp8['date'][:10]})", "",
             f"bf16 run commit {bf16['code_commit']}, FP8 run commit {fp8['code_commit']} "
             f"(`model.fp8={fp8['setup'].get('vamba_fp8')}`). "
             f"Measured GEMM rates: bf16 {rate16:g} TFLOP/s, FP8 {rate8 if rate8 else '-'} TFLOP/s. Times in seconds "
             "(vision tower / LLM); speedup = bf16 time / FP8 time; floors = the row's FLOPs at each GEMM rate.", "",
             "| mode | frames | bf16 s | FP8 s | speedup | bf16 floor s | FP8 floor s | peak GiB bf16 / FP8 |",
             "|---|---|---|---|---|---|---|---|"]
    pairs = []
    for r8 in [r for mode in ("prefill", *TRAIN_MODES) for r in ok_rows(fp8["rows"], "vamba", mode)]:
        r16 = at(bf16["rows"], "vamba", r8["mode"], r8["frames"])
        if r16 is None:
            continue
        pairs.append((r16, r8))
        flop = (r8.get("vision_tflop") or 0.0) + (r8.get("llm_tflop") or 0.0)
        floors = (f"{flop / rate16:.2f} | {flop / rate8:.2f}" if flop and rate8 else "- | -")
        lines.append(f"| {r8['mode']} | {r8['frames']} | {r16['total_ms'] / 1e3:.2f} ({r16['vision_ms'] / 1e3:.2f} / "
                     f"{r16['llm_ms'] / 1e3:.2f}) | {r8['total_ms'] / 1e3:.2f} ({r8['vision_ms'] / 1e3:.2f} / "
                     f"{r8['llm_ms'] / 1e3:.2f}) | {r16['total_ms'] / r8['total_ms']:.2f}x | {floors} | "
                     f"{r16.get('peak_gib', float('nan')):.1f} / {r8.get('peak_gib', float('nan')):.1f} |")
    hour = at(fp8["rows"], "vamba", "prefill", HOUR_FRAMES)
    v8, q = at(fp8["rows"], "vamba", "prefill", 1024), at(bf16["rows"], "qwen2_vl", "prefill", 1024)
    t16, t8 = at(bf16["rows"], "vamba", "train", 1024), at(fp8["rows"], "vamba", "train", 1024)

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    goals = [("the hour prefilled in <= 9 s with FP8", f"{hour['total_ms'] / 1e3:.2f} s" if hour else "-",
              verdict(hour["total_ms"] <= 9e3 if hour else None)),
             ("the 1,024-frame prefill >= 6x faster than Qwen2-VL in bf16",
              f"{q['total_ms'] / v8['total_ms']:.2f}x" if v8 and q else "-",
              verdict(q["total_ms"] / v8["total_ms"] >= 6 if v8 and q else None)),
             ("the FP8 training step (train) at 1,024 frames >= 1.3x faster than bf16, at equal memory or less",
              f"{t16['total_ms'] / t8['total_ms']:.2f}x, peak {t8['peak_gib']:.1f} vs {t16['peak_gib']:.1f} GiB"
              if t16 and t8 else "-",
              verdict(t16["total_ms"] / t8["total_ms"] >= 1.3 and t8["peak_gib"] <= t16["peak_gib"] if t16 and t8
                      else None))]
    lines += ["", "| goal (issue 33) | measured | |", "|---|---|---|"] + [f"| {g} | {m} | {v} |" for g, m, v in goals]
    if not pairs:
        lines += ["", "No row was measured in both precisions."]
    return "\n".join(lines) + "\n"
