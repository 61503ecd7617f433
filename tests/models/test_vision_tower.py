"""The vision tower's fast forward (vamba.models.vision) against transformers' own forward, float32 on the CPU.

Forward and backward (the merger trains in stage 2; the blocks are checked with requires_grad on too) for one
video, a ragged batch (videos of different sizes and images) and one image; the variable-length plan with the
reference varlen kernel; checkpointed blocks; torch.compile; and a transformers Qwen2-VL built in the same
process keeping transformers' forward (per-piece attention calls, its own classes and attention registry).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel, VisionAttention

from tests.models.vamba_tiny import PATCH_DIM, qwen2_vl_model, vamba_config, video_batch
from vamba.models import VambaForConditionalGeneration
from vamba.models.attention import varlen_ref
from vamba.models.vision import VambaVisionTower, attention_plan, vision_attention

TOL = 1e-5  # max |fast - reference| / max |reference|, float32
VISION = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=2, mlp_ratio=2, spatial_merge_size=2, patch_size=14,
              temporal_patch_size=2)
CASES = {  # grid_thw rows (t, h, w): t pieces of h*w patches each
    "one video": [[3, 4, 6]],
    "ragged: videos of different sizes and images": [[2, 4, 6], [1, 6, 4], [3, 2, 2], [1, 4, 4], [2, 6, 4]],
    "one image": [[1, 4, 4]],
}


class SdpaCalls(TorchFunctionMode):
    """Counts calls of ``F.scaled_dot_product_attention`` (and lets them run)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial biases and LayerNorm affine weights (zeros / ones after init would hide a missed term)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".norm" in name or "ln_q" in name:
                p.copy_(p + 0.2 * torch.randn(p.shape, generator=g))


def _tower() -> VambaVisionTower:
    torch.manual_seed(0)
    tower = VambaVisionTower(Qwen2VLVisionConfig(**VISION))
    _randomise(tower)
    return tower


def _inputs(grids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.tensor(grids)
    g = torch.Generator().manual_seed(1)
    return torch.randn(int(grid.prod(-1).sum()), PATCH_DIM, generator=g), grid


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _run(tower: VambaVisionTower, pixels: torch.Tensor, grid: torch.Tensor, **how) -> tuple[list[torch.Tensor], int]:
    """Outputs (blocks' and merger's) and the gradients of a fixed projection of both w.r.t. the pixels and every
    parameter; plus the number of SDPA calls in the forward."""
    x = pixels.clone().requires_grad_()
    with SdpaCalls() as counter:
        out = tower(x, grid_thw=grid, **how)
    g = torch.Generator().manual_seed(2)
    w1, w2 = (torch.randn(t.shape, generator=g) for t in (out.last_hidden_state, out.pooler_output))
    loss = (out.last_hidden_state * w1).sum() + (out.pooler_output * w2).sum()
    grads = torch.autograd.grad(loss, [x, *tower.parameters()])
    return [out.last_hidden_state, out.pooler_output, *grads], counter.calls


def _assert_close(fast: list[torch.Tensor], ref: list[torch.Tensor], names: list[str]) -> None:
    errors = {name: _rel(f, r) for name, f, r in zip(names, fast, ref)}
    assert max(errors.values()) <= TOL, {k: v for k, v in errors.items() if v > TOL}


def _names(tower: VambaVisionTower) -> list[str]:
    return ["last_hidden_state", "pooler_output", "d pixels", *(f"d {n}" for n, _ in tower.named_parameters())]


@pytest.mark.parametrize("mode", ["auto", "batched"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_forward_and_backward_equal_transformers(case: str, mode: str) -> None:
    tower = _tower().train()
    pixels, grid = _inputs(CASES[case])
    ref, ref_calls = _run(tower, pixels, grid, attention="reference")
    fast, fast_calls = _run(tower, pixels, grid, attention=mode)
    _assert_close(fast, ref, _names(tower))
    pieces = int(grid[:, 0].sum())
    lengths = {h * w for _, h, w in CASES[case]}
    assert ref_calls == VISION["depth"] * pieces  # transformers: one call per piece and layer
    assert fast_calls == VISION["depth"] * len(lengths)  # here: one batched call per distinct length and layer


def test_variable_length_plan_equals_per_piece_attention() -> None:
    """The varlen plan (cu_seqlens over every piece, one kernel call) with the reference varlen kernel, and the
    batched plan, equal attention computed piece by piece: forward and backward."""
    grid = torch.tensor(CASES["ragged: videos of different sizes and images"])
    pieces = [h * w for t, h, w in grid.tolist() for _ in range(t)]
    g = torch.Generator().manual_seed(3)
    qkv = [torch.randn(sum(pieces), 2, 8, generator=g, requires_grad=True) for _ in range(3)]
    w = torch.randn(sum(pieces), 2, 8, generator=g)

    def per_piece(q, k, v):
        outs = [F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in parts), scale=0.3).transpose(0, 1)
                for parts in zip(*(t.split(pieces) for t in (q, k, v)))]
        return torch.cat(outs)

    results = []
    for fn in (per_piece,
               lambda q, k, v: vision_attention(q, k, v, attention_plan(grid, "varlen", q.device, q.dtype,
                                                                         kernel=varlen_ref), 0.3),
               lambda q, k, v: vision_attention(q, k, v, attention_plan(grid, "batched", q.device, q.dtype), 0.3)):
        out = fn(*qkv)
        results.append([out, *torch.autograd.grad((out * w).sum(), qkv)])
    plan = attention_plan(grid, "varlen", torch.device("cpu"), torch.float32, kernel=varlen_ref)
    assert plan.cu_seqlens.tolist() == [0, *torch.tensor(pieces).cumsum(0).tolist()] and plan.max_len == max(pieces)
    for other in results[1:]:
        _assert_close(other, results[0], ["out", "dq", "dk", "dv"])


def test_checkpointed_blocks_save_nothing_and_give_the_same_gradients() -> None:
    """transformers' checkpointing switch holds for the fast forward: autograd keeps exactly what it keeps for
    transformers' checkpointed forward (nothing from inside the blocks: they are recomputed in backward, less
    than without checkpointing), and the gradients are unchanged."""
    saved = {}
    for checkpointing, mode in ((False, "auto"), (True, "auto"), (True, "reference")):
        tower = _tower().train()
        if checkpointing:
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        pixels, grid = _inputs(CASES["one video"])
        count = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            saved[checkpointing, mode] = _run(tower, pixels, grid, attention=mode)[0]
        saved[checkpointing, mode, "numel"] = count[0]
    assert saved[True, "auto", "numel"] == saved[True, "reference", "numel"] < saved[False, "auto", "numel"]
    _assert_close(saved[True, "auto"], saved[True, "reference"], _names(_tower()))


@pytest.mark.slow  # ~45 s on 2 cores: Inductor compiles the two block halves for forward and backward
def test_compiled_blocks_equal_transformers() -> None:
    """The opt-in torch.compile of the blocks composes with the tower's forward and autograd, and its first
    compilation serves other token counts (a streamed video's shorter last piece) without recompiling."""
    tower = _tower().train()
    pixels, grid = _inputs(CASES["one video"])
    ref, _ = _run(tower, pixels, grid, attention="reference")
    fast, _ = _run(tower, pixels, grid, attention="auto", compile=True)
    _assert_close(fast, ref, _names(tower))
    pixels, grid = _inputs([[2, 4, 6]])  # fewer tokens than the first call
    ref, _ = _run(tower, pixels, grid, attention="reference")
    with torch._dynamo.config.patch(error_on_recompile=True):
        fast, _ = _run(tower, pixels, grid, attention="auto", compile=True)
    _assert_close(fast, ref, _names(tower))


def test_bad_modes_are_clear_errors() -> None:
    tower = _tower()
    pixels, grid = _inputs(CASES["one image"])
    with pytest.raises(ValueError, match="vision_attention must be one of"):
        tower(pixels, grid_thw=grid, attention="fast")
    with pytest.raises(ValueError, match="needs flash-attn or torch.nn.attention.varlen on CUDA"):
        tower(pixels, grid_thw=grid, attention="varlen")  # float32 on the CPU: no variable-length kernel


def test_transformers_qwen2_vl_keeps_its_own_vision_forward() -> None:
    """VAMBA's fast tower in a process does not change a transformers Qwen2-VL built there (the benchmark's
    baseline): same class and forward, the attention registry untouched, one attention call per piece and layer,
    and its output is what VAMBA's tower gives in ``reference`` mode on the same weights."""
    vamba = VambaForConditionalGeneration(vamba_config(attention_backend="eager")).eval()  # decoder: no SDPA
    batch = video_batch([6], [[(3, 4, 4)]])
    depth = vamba.config.vision_config.depth
    with torch.no_grad(), SdpaCalls() as counter:
        vamba(**batch)
    assert counter.calls == depth  # the fast tower: one call per layer (the decoder uses its own attention path)
    qwen = qwen2_vl_model()
    tower = qwen.model.visual
    assert type(tower) is Qwen2VisionTransformerPretrainedModel and type(vamba.visual) is VambaVisionTower
    assert tower.config._attn_implementation == "sdpa" and ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    assert Qwen2VisionTransformerPretrainedModel.forward.__module__ == VisionAttention.forward.__module__ == \
        "transformers.models.qwen2_vl.modeling_qwen2_vl"
    vamba.visual.load_state_dict(tower.state_dict())
    pixels, grid = batch["pixel_values"], batch["grid_thw"]
    with torch.no_grad(), SdpaCalls() as counter:
        stock = tower(pixels, grid_thw=grid).pooler_output
    assert counter.calls == depth * 3  # transformers' loop: one call per temporal patch
    with torch.no_grad():
        assert torch.equal(vamba.visual(pixels, grid_thw=grid, attention="reference").pooler_output, stock)
        assert _rel(vamba.visual(pixels, grid_thw=grid).pooler_output, stock) <= TOL


@pytest.mark.parametrize("trains", ["merger", "everything"])
def test_model_switch_gives_the_same_loss_and_gradients(trains: str) -> None:
    """``VambaConfig.vision_attention`` through the model: a training step (frozen blocks + trained merger, or the
    whole tower trained) gives the same loss and gradients with the fast tower and with transformers' forward."""
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 2), (2, 4, 2)]])
    results = []
    for mode in ("reference", "auto"):
        torch.manual_seed(0)
        model = VambaForConditionalGeneration(vamba_config(vision_attention=mode)).train()
        _randomise(model.visual)
        model.visual.requires_grad_(trains == "everything")
        model.visual.merger.requires_grad_(True)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (ref_loss, ref_grads), (loss, grads) = results
    assert grads.keys() == ref_grads.keys() and any(n.startswith("visual.merger.") for n in grads)
    assert any(n.startswith("visual.blocks.") for n in grads) == (trains == "everything")
    assert _rel(loss, ref_loss) <= TOL
    for name, g in grads.items():  # the decoder's gradients amplify the tower's ~1e-7 differences (as in
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)  # test_vamba_model)


def test_frame_pieces_cut_items_along_time_in_order() -> None:
    from vamba.models.vision import frame_pieces

    pixels, grid = _inputs([[3, 4, 6], [1, 2, 2], [2, 2, 4]])
    pieces = frame_pieces(pixels, grid, piece_frames=4)  # 2 temporal patches per piece
    assert [g.tolist() for _, g in pieces] == [[[2, 4, 6]], [[1, 4, 6], [1, 2, 2]], [[2, 2, 4]]]
    assert torch.equal(torch.cat([p for p, _ in pieces]), pixels)
    assert all(p.shape[0] == int(g.prod(-1).sum()) for p, g in pieces)
    assert frame_pieces(pixels, grid, piece_frames=0)[0][1] is grid and len(frame_pieces(pixels, grid, 12)) == 1


@pytest.mark.parametrize("trains", ["nothing", "merger"])
def test_frozen_tower_in_pieces_gives_the_same_loss_and_gradients(trains: str) -> None:
    """``VambaConfig.vision_piece_frames``: a frozen tower run a few frames per call (as the streaming prefill does)
    gives the loss and gradients of one call over the whole batch."""
    batch = video_batch([6, 8], [[(3, 4, 4)], [(1, 2, 2), (2, 4, 2)]])
    results = []
    for piece_frames in (0, 2, 4):
        torch.manual_seed(0)
        model = VambaForConditionalGeneration(vamba_config(vision_piece_frames=piece_frames)).train()
        _randomise(model.visual)
        model.visual.requires_grad_(False)
        model.visual.merger.requires_grad_(trains == "merger")
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (ref_loss, ref_grads), *rest = results
    assert any(n.startswith("visual.merger.") for n in ref_grads) == (trains == "merger")
    for loss, grads in rest:
        assert grads.keys() == ref_grads.keys() and _rel(loss, ref_loss) <= TOL
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="vision_piece_frames"):
        vamba_config(vision_piece_frames=3)
