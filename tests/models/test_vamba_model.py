"""VambaForConditionalGeneration forward: batching equivalences, text-only batches, options, checkpointing."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import pack, row, vamba_config, video_batch
from vamba.models import VambaForConditionalGeneration
from vamba.models.decoder import VambaDecoderLayer


def _model(**overrides) -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config(**overrides)).eval()
    with torch.no_grad():  # make cross-attention matter (alpha 0.5) and differ from self-attention
        for layer in model.model.layers:
            for p in layer.cross_attn.parameters():
                p.normal_(0, 0.1)
    return model


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch, return_logits=True).logits


# Row 1 has a shorter text and a shorter video; row 2 two items (image + video); row 3 no video at all.
LENGTHS = [9, 6, 8, 5]
GRIDS = [[(4, 4, 4)], [(2, 2, 4)], [(1, 4, 2), (2, 2, 2)], []]


@pytest.mark.parametrize("options", [{}, {"use_alpha_balancing": False}, {"cross_attn_use_layer_norm": True},
                                     {"cross_attn_use_position_embeddings": True}])
def test_padded_batch_equals_separate_samples(options):
    model = _model(**options)
    batch = video_batch(LENGTHS, GRIDS)
    logits = _logits(model, batch)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(logits[b, :n], _logits(model, row(batch, b))[0], rtol=1e-4, atol=1e-5)


def test_packed_row_equals_separate_samples():
    model = _model()
    batch = video_batch(LENGTHS, GRIDS)
    samples = [row(batch, b) for b in range(len(LENGTHS))]
    packed = pack(samples)
    logits = _logits(model, packed)
    start = 0
    for sample, n in zip(samples, LENGTHS):
        torch.testing.assert_close(logits[0, start:start + n], _logits(model, sample)[0], rtol=1e-4, atol=1e-5)
        start += n
    # The loss is the mean over every labelled target, never across a sample boundary.
    with torch.no_grad():
        losses = [model(**s).loss * (n - 1) for s, n in zip(samples, LENGTHS)]
        packed_loss = model(**packed).loss
    torch.testing.assert_close(packed_loss, sum(losses) / (sum(LENGTHS) - len(LENGTHS)), rtol=1e-5, atol=1e-6)


def test_video_changes_the_text_output():
    model = _model()
    batch = row(video_batch(LENGTHS, GRIDS), 0)
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    assert (_logits(model, batch) - _logits(model, other)).abs().max() > 1e-3


def test_eager_reference_matches_sdpa_through_the_model():
    model = _model()
    batch = video_batch(LENGTHS, GRIDS)
    expected = _logits(model, batch)
    model.config.attention_backend = "eager"
    torch.testing.assert_close(_logits(model, batch), expected, rtol=1e-4, atol=1e-5)


def test_text_only_batch_still_runs_every_module():
    model = _model().train()
    batch = video_batch([7, 4], [[], []])
    assert batch["pixel_values"].shape == (0, 1176) and batch["grid_thw"].shape == (0, 3)
    model(**batch).loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    # Vision tower, Mamba blocks and cross-attention K/V all took part (ZeRO-3 safety); only the last
    # layer's Mamba block has no effect by design (its output would feed no further layer).
    assert no_grad == model.parameters_without_effect() != []


def test_text_only_sample_reads_no_video():
    """A text-only sample's output does not depend on the other rows' videos (cross-attention reads nothing)."""
    model = _model()
    batch = video_batch([5, 6], [[], [(2, 4, 4)]])
    alone = _logits(model, row(batch, 0))
    torch.testing.assert_close(_logits(model, batch)[0, :5], alone[0], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    """Checkpointed layers, and checkpointed layers whose inputs wait in host memory (HostOffload), give the
    plain gradients; with offload, exactly the two streams entering each layer go through the host hooks."""
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 2)]])
    grads = []
    for checkpointing, offload in ((False, False), (True, False), (True, True)):
        model = _model().train()
        if checkpointing:
            # transformers >= 5.23 renames the switch; 5.17 only has the old name.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.model.gradient_checkpointing
        model.set_checkpoint_offload(offload)
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if offload:
            cfg = model.config.text_config
            b, n = batch["input_ids"].shape
            m = 2 * 4 * 4 // 4  # the longest row's merged video tokens: [B, M, D] is padded to it
            stream_bytes = cfg.num_hidden_layers * cfg.hidden_size * 4 * b * (n + m)  # float32, both streams
            assert stream_bytes <= model.offloaded_bytes <= stream_bytes * 1.05
        else:
            assert model.offloaded_bytes == 0
    assert len(grads[0]) == len(grads[1]) == len(list(model.parameters())) - len(model.parameters_without_effect())
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for name, g in grads[0].items():
            torch.testing.assert_close(other[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("train_video_stream", [False, True], ids=["shared-weights-only", "everything"])
def test_checkpointed_backward_reruns_the_mamba_blocks_only_when_they_need_gradients(train_video_stream):
    """Each layer runs its Mamba-2 update last, so the checkpointed recomputation in backward (which stops after the
    last tensor backward needs) skips the Mamba-2 blocks when nothing of the video stream trains (VAMBA training only
    the weights it shares with Qwen2-VL), and re-runs them when they train; the gradients are the plain ones."""
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 2)]])
    grads, calls = [], []
    for checkpointing in (False, True):
        model = _model().train()
        for name, p in model.named_parameters():
            p.requires_grad_(train_video_stream or not (".cross_attn." in name or ".vision_mixer." in name
                                                       or name.endswith(".alpha") or name.startswith("visual.")))
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        mixers = [layer.vision_mixer for layer in model.model.layers if not layer.is_last]
        runs = []
        hooks = [m.register_forward_pre_hook(lambda *_: runs.append(1)) for m in mixers]  # (recomputation may stop inside)
        loss = model(**batch).loss
        forward_runs = len(runs)
        loss.backward()
        calls.append((forward_runs, len(runs) - forward_runs))
        for h in hooks:
            h.remove()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert calls[0] == (len(mixers), 0)
    assert calls[1] == (len(mixers), len(mixers) if train_video_stream else 0)
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("vision_attention", ["auto", "reference"])
def test_frozen_vision_blocks_build_no_autograd_graph(vision_attention):
    """Frozen ViT blocks (the paper's recipe) run without autograd even in a checkpointed training step, so
    none of their activations outlive them; a trainable merger (stage 2) or tower gets the same gradients.
    Both tower forwards (vamba.models.vision): the fast one calls no block module, so the check is on the
    tower's output (the last block's)."""
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 2)]])
    merger_grads = []
    for trains in ("nothing", "merger", "everything"):
        model = _model(vision_attention=vision_attention).train()
        model.gradient_checkpointing_enable()
        model.visual.requires_grad_(trains == "everything")
        model.visual.merger.requires_grad_(trains != "nothing")
        graphs = []
        handle = model.visual.register_forward_hook(
            lambda m, i, out: graphs.append(out.last_hidden_state.grad_fn is not None))
        model(**batch).loss.backward()
        handle.remove()
        assert graphs == [trains == "everything"], trains
        block_grads = [p.grad for p in model.visual.blocks.parameters()]
        assert all(g is not None for g in block_grads) if trains == "everything" else all(g is None for g in block_grads)
        if trains != "nothing":
            merger_grads.append([p.grad for p in model.visual.merger.parameters()])
            assert all(g is not None and g.abs().sum() > 0 for g in merger_grads[-1])
        assert all(p.grad is not None for p in model.model.layers[0].cross_attn.parameters())
    for a, b in zip(*merger_grads):
        torch.testing.assert_close(a, b)


def test_alpha_is_clamped_to_unit_interval_with_straight_through_gradient():
    model = _model().train()
    layer: VambaDecoderLayer = model.model.layers[0]
    batch = video_batch([6], [[(2, 2, 2)]])
    with torch.no_grad():
        layer.alpha.fill_(1.7)
    loss_high = model(**batch).loss
    with torch.no_grad():
        layer.alpha.fill_(1.0)
    loss_one = model(**batch).loss
    torch.testing.assert_close(loss_high, loss_one)  # used value clamped to 1
    layer.alpha.grad = None
    loss_high.backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.abs() > 0  # still trainable at the clamp


def test_loss_needs_no_logits_and_logits_on_request():
    model = _model()
    batch = video_batch([6, 4], [[(2, 2, 2)], [(1, 2, 2)]])
    with torch.no_grad():
        out = model(**batch)
        assert out.logits is None and out.loss is not None
        last = model(**batch, return_logits=True, logits_to_keep=1).logits
    assert last.shape == (2, 1, model.config.text_config.vocab_size)


def test_bad_batches_are_clear_errors():
    model = _model()
    batch = video_batch([6, 4], [[(2, 2, 2)], [(1, 2, 2)]])
    with pytest.raises(ValueError, match="pixel_values and grid_thw disagree"):
        model(**dict(batch, pixel_values=batch["pixel_values"][:-4]))
    with pytest.raises(ValueError, match="outside the batch"):
        model(**dict(batch, visual_row=torch.tensor([0, 5])))
    with pytest.raises(ValueError, match="not divisible by spatial_merge_size"):
        model(**dict(batch, grid_thw=torch.tensor([[2, 2, 2], [1, 1, 4]])))
    with pytest.raises(TypeError, match="unexpected argument 'video_grid'"):
        model(**batch, video_grid=batch["grid_thw"])
    with pytest.raises(ValueError, match="pixel_values needs grid_thw"):  # never silently without its video
        model(**{k: v for k, v in batch.items() if k != "grid_thw"})
