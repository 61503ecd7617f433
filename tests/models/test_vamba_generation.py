"""generate() with the text KV cache and the video cache: same tokens as full forwards, reusable video cache."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from tests.models.vamba_tiny import row, vamba_config, video_batch
from vamba.models import VambaForConditionalGeneration, VideoCache
from vamba.models.modeling import CACHE_NAME

NEW = 6
VISION_KEYS = ("pixel_values", "grid_thw", "visual_row", "visual_seq_idx")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VambaForConditionalGeneration(vamba_config()).eval()
    with torch.no_grad():
        for layer in m.model.layers:
            for p in layer.cross_attn.parameters():
                p.normal_(0, 0.1)
    return m


def _left_padded(lengths, grids, seed=0):
    """Prompts for generation: left padding, as batched generation needs."""
    batch = video_batch(lengths, grids, seed=seed)
    ids, mask = torch.zeros_like(batch["input_ids"]), torch.zeros_like(batch["attention_mask"])
    for b, n in enumerate(lengths):
        ids[b, -n:], mask[b, -n:] = batch["input_ids"][b, :n], 1
    return dict(batch, input_ids=ids, attention_mask=mask)


def _greedy_by_full_forwards(model, batch, steps):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    vision = {k: batch[k] for k in VISION_KEYS}
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, **vision).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids[:, batch["input_ids"].shape[1]:]


def _generate(model, batch, **kwargs):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, **kwargs)
    return out[:, batch["input_ids"].shape[1]:]


def test_greedy_generate_with_caches_equals_full_forwards(model):
    batch = _left_padded([7, 4], [[(2, 4, 4)], [(1, 2, 2), (2, 2, 2)]])
    tokens = _generate(model, batch, do_sample=False)
    assert tokens.shape == (2, NEW)
    assert torch.equal(tokens, _greedy_by_full_forwards(model, batch, NEW))


def test_sampling_with_caches_equals_sampling_without(model):
    batch = _left_padded([5, 6], [[(2, 2, 4)], []], seed=1)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        runs.append(_generate(model, batch, do_sample=True, top_k=20, temperature=1.5, use_cache=use_cache))
    assert torch.equal(runs[0], runs[1])


def test_video_cache_is_reused_across_questions(model):
    video = video_batch([1], [[(4, 4, 4)]], seed=2)
    cache = model.encode_video(**{k: video[k] for k in VISION_KEYS})
    assert isinstance(cache, VideoCache) and len(cache) == model.config.text_config.num_hidden_layers
    questions = [torch.randint(3, 90, (1, n), generator=torch.Generator().manual_seed(n)) for n in (5, 8)]
    for q in questions:
        from_pixels = _generate(model, {"input_ids": q, "attention_mask": torch.ones_like(q),
                                        **{k: video[k] for k in VISION_KEYS}}, do_sample=False)
        from_cache = _generate(model, {"input_ids": q, "attention_mask": torch.ones_like(q)}, video_cache=cache,
                               do_sample=False)
        assert torch.equal(from_cache, from_pixels)
    # Both questions in one batch, sharing the one encoded video.
    both = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.zeros_like(both)
    both[0, -5:], mask[0, -5:] = questions[0][0], 1
    both[1], mask[1] = questions[1][0], 1
    batched = _generate(model, {"input_ids": both, "attention_mask": mask}, video_cache=cache.select([0, 0]),
                        do_sample=False)
    for b, q in enumerate(questions):
        single = _generate(model, {"input_ids": q, "attention_mask": torch.ones_like(q)}, video_cache=cache,
                           do_sample=False)
        assert torch.equal(batched[b], single[0])


def test_forward_returns_the_caches_and_decoding_uses_only_them(model):
    batch = row(video_batch([6], [[(2, 4, 4)]]), 0)
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        step = model(input_ids=nxt, attention_mask=torch.ones(1, 7, dtype=torch.long),
                     cache=out[CACHE_NAME], video_cache=out.video_cache).logits
        full = model(input_ids=torch.cat([batch["input_ids"], nxt], 1),
                     **{k: batch[k] for k in VISION_KEYS}).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


def test_num_return_sequences_and_beams_share_one_encoded_video(model):
    batch = _left_padded([5, 7], [[(2, 2, 4)], [(1, 2, 2)]], seed=3)
    torch.manual_seed(7)
    expanded = _generate(model, batch, do_sample=True, num_return_sequences=2)
    # The same as a batch whose rows (and videos) are each repeated twice.
    cache = model.encode_video(**{k: batch[k] for k in VISION_KEYS}, batch_size=2)
    repeated = {"input_ids": batch["input_ids"].repeat_interleave(2, 0),
                "attention_mask": batch["attention_mask"].repeat_interleave(2, 0),
                "video_cache": cache.select([0, 0, 1, 1])}
    torch.manual_seed(7)
    assert torch.equal(expanded, _generate(model, repeated, do_sample=True))
    beams = _generate(model, batch, do_sample=False, num_beams=3)
    assert beams.shape == (2, NEW)


def test_no_deprecation_warning_from_forward_or_generate(model):
    """transformers 5.24 renamed the text cache to ``cache``; an output field or argument under the old name logs
    its deprecation warning on every `vamba chat` (once per process, hence the cleared once-cache)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process memo
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batch = _left_padded([5, 7], [[(2, 2, 4)], [(1, 2, 2)]], seed=4)
            _generate(model, batch, do_sample=False)
            _generate(model, batch, do_sample=True, num_return_sequences=2)
            one = row(video_batch([6], [[(2, 4, 4)]]), 0)
            with torch.no_grad():
                out = model(**{k: v for k, v in one.items() if k != "labels"}, use_cache=True)
                model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=torch.ones(1, 7, dtype=torch.long),
                      cache=out[CACHE_NAME], video_cache=out.video_cache)
    finally:
        hf_logger.removeHandler(handler)
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    assert not [m for m in messages if "deprecated" in m and ("past_key_values" in m or "cache" in m)], messages
