"""transformers' Qwen2-VL input names (pixel_values_videos / video_grid_thw, pixel_values / image_grid_thw,
mm_token_type_ids) give what the packed keys of docs/batch.md give, in forward and generate; bad calls are errors."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import PATCH_DIM, VOCAB, vamba_config
from vamba.models import VambaForConditionalGeneration
from vamba.models.visual_inputs import IMAGE, VIDEO, packed_visual_inputs

VS, VE, IMAGE_PAD, VIDEO_PAD, PAD = 4, 5, 6, 7, 0
NEW = 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VambaForConditionalGeneration(vamba_config(vision_start_token_id=VS, vision_end_token_id=VE,
                                                   image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD)).eval()
    with torch.no_grad():  # make cross-attention matter
        for layer in m.model.layers:
            for p in layer.cross_attn.parameters():
                p.normal_(0, 0.1)
    return m


def both_conventions(rows: list[list], pad_left: bool = False, seed: int = 0) -> tuple[dict, dict]:
    """A batch in both namings. ``rows``: per row, a list of text-run lengths (int) and items
    (("image" | "video", (t, h, w))); each item becomes <|vision_start|><|vision_end|> in the prompt.
    Returns (packed keys of docs/batch.md, transformers' names), padded with PAD on the right or left."""
    g = torch.Generator().manual_seed(seed)
    seqs, types, items = [], [], []  # items: (kind, row, grid, pixels) in order of appearance
    for r, parts in enumerate(rows):
        ids, tt = [], []
        for part in parts:
            if isinstance(part, int):
                ids += torch.randint(8, VOCAB, (part,), generator=g).tolist()
                tt += [0] * part
            else:
                kind, grid = part
                ids += [VS, VE]
                tt += [IMAGE if kind == "image" else VIDEO, 0]
                items.append((kind, r, grid, torch.randn(grid[0] * grid[1] * grid[2], PATCH_DIM, generator=g)))
        seqs.append(ids)
        types.append(tt)
    n = max(map(len, seqs))
    input_ids = torch.full((len(rows), n), PAD, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    mm = torch.zeros_like(input_ids)
    for r, (ids, tt) in enumerate(zip(seqs, types)):
        cols = slice(n - len(ids), n) if pad_left else slice(0, len(ids))
        input_ids[r, cols], mask[r, cols], mm[r, cols] = torch.tensor(ids), 1, torch.tensor(tt)

    def stack(kind):
        chosen = [it for it in items if kind is None or it[0] == kind]
        return (torch.cat([it[3] for it in chosen]) if chosen else torch.zeros(0, PATCH_DIM),
                torch.tensor([it[2] for it in chosen], dtype=torch.long).reshape(-1, 3))

    text = {"input_ids": input_ids, "attention_mask": mask}
    pixels, grid = stack(None)
    ours = dict(text, pixel_values=pixels, grid_thw=grid, visual_row=torch.tensor([it[1] for it in items]),
                visual_seq_idx=torch.zeros(len(items), dtype=torch.long))
    theirs = dict(text, mm_token_type_ids=mm)
    if any(it[0] == "image" for it in items):
        theirs["pixel_values"], theirs["image_grid_thw"] = stack("image")
    if any(it[0] == "video" for it in items):
        theirs["pixel_values_videos"], theirs["video_grid_thw"] = stack("video")
    return ours, theirs


MIXED = [[3, ("video", (2, 4, 4)), 2, ("image", (1, 2, 4)), 4],
         [("image", (1, 4, 2)), 5],
         [2, ("video", (2, 2, 2)), ("video", (4, 2, 2)), 1, ("image", (1, 2, 2)), 3],
         [6]]


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("pad_left", [False, True])
def test_mixed_batch_gives_the_same_logits_in_both_conventions(model, pad_left):
    ours, theirs = both_conventions(MIXED, pad_left=pad_left)
    assert theirs["image_grid_thw"].shape[0] == 3 and theirs["video_grid_thw"].shape[0] == 3
    expected = _logits(model, ours)
    torch.testing.assert_close(_logits(model, theirs), expected, rtol=0, atol=0)
    # The conversion puts the items where the packed keys have them (marker order, row by row).
    converted = packed_visual_inputs(theirs["input_ids"], VS, **{k: v for k, v in theirs.items() if k != "input_ids"})
    for key in ("pixel_values", "grid_thw", "visual_row"):
        assert torch.equal(converted[key], ours[key]), key
    assert converted["visual_seq_idx"] is None
    # The video really is read: other pixels, other logits.
    other = dict(theirs, pixel_values_videos=torch.randn_like(theirs["pixel_values_videos"]))
    assert (_logits(model, other) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["image", "video"])
def test_one_kind_needs_no_mm_token_type_ids(model, kind):
    rows = [[2, (kind, (1 if kind == "image" else 2, 2, 4)), 3, (kind, (1 if kind == "image" else 4, 2, 2)), 1],
            [4, (kind, (1 if kind == "image" else 2, 4, 4)), 2]]
    ours, theirs = both_conventions(rows, seed=1)
    theirs.pop("mm_token_type_ids")
    torch.testing.assert_close(_logits(model, theirs), _logits(model, ours), rtol=0, atol=0)


def test_packed_rows_take_each_items_sample_from_text_seq_idx(model):
    rows = [[3, ("video", (2, 2, 4)), 2], [("image", (1, 2, 2)), 4], [5], [1, ("video", (2, 2, 2)), 2,
                                                                            ("image", (1, 4, 2))]]
    ours, theirs = both_conventions(rows, seed=2)
    lengths = ours["attention_mask"].sum(1).tolist()
    flat = lambda t: torch.cat([t[r, :n] for r, n in enumerate(lengths)])[None]  # noqa: E731
    seq = torch.cat([torch.full((n,), r, dtype=torch.int32) for r, n in enumerate(lengths)])[None]
    text = {"input_ids": flat(ours["input_ids"]), "attention_mask": torch.ones(1, sum(lengths), dtype=torch.long),
            "position_ids": torch.cat([torch.arange(n) for n in lengths])[None], "text_seq_idx": seq}
    packed_ours = dict(text, pixel_values=ours["pixel_values"], grid_thw=ours["grid_thw"],
                       visual_row=torch.zeros_like(ours["visual_row"]), visual_seq_idx=ours["visual_row"])
    packed_theirs = dict(text, mm_token_type_ids=flat(theirs["mm_token_type_ids"]),
                         **{k: theirs[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos",
                                                   "video_grid_thw")})
    converted = packed_visual_inputs(text["input_ids"], VS, text_seq_idx=seq,
                                     **{k: v for k, v in packed_theirs.items() if k not in text})
    assert converted["visual_seq_idx"].tolist() == [0, 1, 3, 3]
    expected = _logits(model, packed_ours)
    torch.testing.assert_close(_logits(model, packed_theirs), expected, rtol=0, atol=0)
    # ... which is the unpacked batch, sample by sample.
    unpacked = _logits(model, ours)
    start = 0
    for r, n in enumerate(lengths):
        torch.testing.assert_close(expected[0, start:start + n], unpacked[r, :n], rtol=1e-4, atol=1e-5)
        start += n


def _bad(model, batch, match):
    with pytest.raises(ValueError, match=match):
        model(**batch)


def test_bad_calls_are_clear_errors(model):
    ours, theirs = both_conventions(MIXED)
    # Mixing the two conventions.
    _bad(model, dict(ours, image_grid_thw=theirs["image_grid_thw"]), r"\['grid_thw', .*image_grid_thw.*one convention")
    _bad(model, dict(ours, pixel_values_videos=theirs["pixel_values_videos"]), "one convention")
    _bad(model, dict(theirs, visual_row=ours["visual_row"]), "one convention")
    # pixel_values with neither grid.
    _bad(model, {k: ours[k] for k in ("input_ids", "attention_mask", "pixel_values")},
         "pixel_values needs grid_thw .* or image_grid_thw")
    # Images and videos without mm_token_type_ids.
    _bad(model, {k: v for k, v in theirs.items() if k != "mm_token_type_ids"}, "pass mm_token_type_ids")
    # Half of a pair.
    _bad(model, {k: v for k, v in theirs.items() if k != "video_grid_thw"},
         "pixel_values_videos was given without video_grid_thw")
    _bad(model, {k: v for k, v in theirs.items() if k != "pixel_values"}, "image_grid_thw was given without pixel_values")
    # Patches and grids disagree.
    _bad(model, dict(theirs, pixel_values_videos=theirs["pixel_values_videos"][:-1]),
         "video_grid_thw implies .* pixel_values_videos has")
    # Markers and items disagree: per kind, and in total without mm_token_type_ids.
    _bad(model, dict(theirs, video_grid_thw=theirs["video_grid_thw"][:2],
                     pixel_values_videos=theirs["pixel_values_videos"][:int(theirs["video_grid_thw"][:2].prod(-1).sum())]),
         "marks 3 <.vision_start.> tokens as videos, the inputs hold 2 videos")
    one_kind = [[2, ("video", (2, 2, 2)), 3], [("video", (2, 2, 2)), 1]]
    _, videos = both_conventions(one_kind)
    videos.pop("mm_token_type_ids")
    dropped = videos["input_ids"].clone()
    dropped[1, 0] = 9  # one marker fewer than videos
    _bad(model, dict(videos, input_ids=dropped), "hold 1 <.vision_start.> tokens .* 0 image.* and 2 video")
    # mm_token_type_ids: text type on a marker, a type on a non-marker, a wrong shape.
    mm = theirs["mm_token_type_ids"].clone()
    mm[0, 3] = 0
    _bad(model, dict(theirs, mm_token_type_ids=mm), "is 0 at the <.vision_start.> token of row 0, position 3")
    mm = theirs["mm_token_type_ids"].clone()
    mm[3, 2] = VIDEO
    _bad(model, dict(theirs, mm_token_type_ids=mm), "nonzero at row 3, position 2, which is not a <.vision_start.>")
    _bad(model, dict(theirs, mm_token_type_ids=theirs["mm_token_type_ids"][:, :-1]), "mm_token_type_ids has shape")
    # A Qwen2-VL prompt (pad tokens) and a call without input_ids.
    padded = theirs["input_ids"].clone()
    padded[3, 1] = VIDEO_PAD
    _bad(model, dict(theirs, input_ids=padded), "<.video_pad.> tokens .* VambaProcessor")
    embeds = model.get_input_embeddings()(theirs["input_ids"])
    _bad(model, dict({k: v for k, v in theirs.items() if k != "input_ids"}, inputs_embeds=embeds),
         "need input_ids")
    with pytest.raises(TypeError, match="unexpected argument 'pixel_values_video'"):
        model(**ours, pixel_values_video=ours["pixel_values"])


def test_text_only_batch_with_mm_token_type_ids(model):
    ours, theirs = both_conventions([[5], [3]])
    assert set(theirs) == {"input_ids", "attention_mask", "mm_token_type_ids"}
    torch.testing.assert_close(_logits(model, theirs), _logits(model, ours), rtol=0, atol=0)


def _generate(model, batch, **kwargs):
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, **kwargs)
    return out[:, batch["input_ids"].shape[1]:]


def test_generate_takes_transformers_names_and_encodes_the_video_once(model):
    ours, theirs = both_conventions(MIXED, pad_left=True, seed=3)
    calls = []
    hook = model.visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        got = _generate(model, theirs, do_sample=False)
    finally:
        hook.remove()
    assert len(calls) == 1  # prefill only: decoding steps read the video cache
    assert torch.equal(got, _generate(model, ours, do_sample=False))
    # Without caches the vision inputs go to every step (mm_token_type_ids grows with the generated tokens).
    assert torch.equal(_generate(model, theirs, do_sample=False, use_cache=False), got)


def test_generate_expands_transformers_names_for_several_sequences(model):
    ours, theirs = both_conventions(MIXED[:3], pad_left=True, seed=4)
    runs = []
    for batch in (theirs, ours):
        torch.manual_seed(11)
        runs.append(_generate(model, batch, do_sample=True, num_return_sequences=2))
    assert runs[0].shape == (6, NEW) and torch.equal(runs[0], runs[1])
    assert torch.equal(_generate(model, theirs, num_beams=2), _generate(model, ours, num_beams=2))
