"""Streaming prefill (pieces of frames, Mamba-2 state carried) equals the one-shot prefill of the whole video."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import PATCH_DIM, VOCAB, vamba_config
from vamba.inference.streaming import VideoStream, split_patches, stream_video
from vamba.models import VambaForConditionalGeneration

GRID = (7, 4, 6)  # 7 temporal patches, 6 merged tokens each: 42 video tokens, Mamba-2 chunk 4


def make_model(**options) -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    return VambaForConditionalGeneration(vamba_config(**options)).eval()


def video(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([GRID])
    return torch.randn(int(grid.prod()), PATCH_DIM, generator=g), grid


OPTIONS = [{}, {"cross_attn_use_position_embeddings": True, "cross_attn_use_layer_norm": True},
           {"use_alpha_balancing": False}]


@pytest.mark.parametrize("options", OPTIONS, ids=["released", "rope+norm", "plain-sum"])
@pytest.mark.parametrize("piece_t", [1, 2, 3, 7])
def test_stream_equals_one_shot_cache(options: dict, piece_t: int) -> None:
    model = make_model(**options)
    pixels, grid = video()
    whole = model.encode_video(pixels, grid)
    streamed = stream_video(model, split_patches(pixels, grid, piece_t), GRID)
    assert len(streamed) == len(whole) == model.config.text_config.num_hidden_layers
    for a, b in zip(whole.keys + whole.values, streamed.keys + streamed.values):
        assert a.shape == b.shape == (1, 2, 42, 16)
        torch.testing.assert_close(b, a, atol=2e-6, rtol=1e-5)
    assert torch.equal(streamed.segments, whole.segments)


def test_pieces_of_any_sizes_and_both_hook_modes() -> None:
    """Pieces of different sizes (a long one, a one-patch one: a video's shorter last piece), written into the cache
    layer by layer (``write_kv``, what VideoStream does) or returned by ``encode_video_piece``: the same cache."""
    model = make_model(cross_attn_use_position_embeddings=True)
    pixels, grid = video(3)
    whole = model.encode_video(pixels, grid)
    sizes, per_t = [4, 1, 2], GRID[1] * GRID[2]
    starts = [0, 4, 5]
    pieces = [(pixels[s * per_t:(s + n) * per_t], torch.tensor([[n, *GRID[1:]]])) for s, n in zip(starts, sizes)]
    streamed = stream_video(model, pieces, GRID)
    states, returned = None, []
    for (px, g), start in zip(pieces, starts):
        keys, values, states = model.encode_video_piece(px, g, states, t_offset=start)
        returned.append((keys, values))
    for layer in range(len(whole)):
        joined_k = torch.cat([k[layer] for k, _ in returned], dim=2)
        joined_v = torch.cat([v[layer] for _, v in returned], dim=2)
        assert torch.equal(joined_k, streamed.keys[layer]) and torch.equal(joined_v, streamed.values[layer])
        torch.testing.assert_close(streamed.keys[layer], whole.keys[layer], atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(streamed.values[layer], whole.values[layer], atol=2e-6, rtol=1e-5)
    written = []
    keys, values, _ = model.encode_video_piece(*pieces[0], None, write_kv=lambda i, k, v: written.append(i))
    assert keys == values == [] and written == list(range(len(whole)))


def test_streamed_cache_answers_like_pixels() -> None:
    """generate() from a streamed cache gives the same tokens and logits as generate() from the pixels."""
    model = make_model(cross_attn_use_position_embeddings=True)
    with torch.no_grad():  # sharpen the random model so near-ties cannot flip a greedy step
        model.lm_head.weight.mul_(20)
    pixels, grid = video(1)
    ids = torch.randint(3, VOCAB, (1, 9), generator=torch.Generator().manual_seed(2))
    common = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                  output_logits=True, return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    ref = model.generate(pixel_values=pixels, grid_thw=grid, **common)
    cache = stream_video(model, split_patches(pixels, grid, 2), GRID)
    out = model.generate(video_cache=cache, **common)
    assert torch.equal(out.sequences, ref.sequences)
    for a, b in zip(ref.logits, out.logits):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_split_patches_covers_the_video_in_order() -> None:
    pixels, grid = video()
    pieces = split_patches(pixels, grid, 3)
    assert [p[1].tolist() for p in pieces] == [[[3, 4, 6]], [[3, 4, 6]], [[1, 4, 6]]]
    assert torch.equal(torch.cat([p[0] for p in pieces]), pixels)
    with pytest.raises(ValueError, match="piece_t"):
        split_patches(pixels, grid, 0)


def test_stream_refuses_inconsistent_pieces() -> None:
    model = make_model()
    pixels, grid = video()
    stream = VideoStream(model, GRID)
    with pytest.raises(ValueError, match="does not match"):
        stream.push(torch.randn(4 * 4 * 4, PATCH_DIM), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="overflows"):
        stream.push(torch.randn(8 * 4 * 6, PATCH_DIM), torch.tensor([[8, 4, 6]]))
    stream.push(*split_patches(pixels, grid, 3)[0])
    with pytest.raises(ValueError, match="3 of 7 temporal patches"):
        stream.finish()
    with pytest.raises(ValueError, match="one visual item"):
        model.encode_video_piece(pixels, torch.tensor([[3, 4, 6], [4, 4, 6]]))
    with pytest.raises(ValueError, match="divisible"):
        VideoStream(model, (2, 3, 4))
