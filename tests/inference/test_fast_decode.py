"""Greedy decoding with the static text cache (vamba.models.fast_decode) against transformers' generate, float32 on
the CPU, on a tiny checkpoint and a video cache encoded from a real mp4 (tests/inference/conftest.py)."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vamba.inference.chat import EncodedVideo, VambaChat
from vamba.models.fast_decode import _Step, greedy_decode

QUESTIONS = ["What colour was the shape?", "Describe the video.", "How many objects move from left to right?"]


def reference(chat: VambaChat, ids, cache, max_new_tokens: int, eos, mask=None, min_new_tokens: int = 0,
              logits: list | None = None):
    mask = torch.ones_like(ids) if mask is None else mask
    out = chat.model.generate(input_ids=ids, attention_mask=mask, video_cache=cache, max_new_tokens=max_new_tokens,
                              min_new_tokens=min_new_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, eos_token_id=eos, pad_token_id=chat.pad_token_id, output_logits=True,
                              return_dict_in_generate=True)
    if logits is not None:
        logits.extend(out.logits)
    return out.sequences


def assert_same_logits(got: list, want: list) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b.float(), rtol=1e-6, atol=1e-6, msg=lambda m: f"step {i}: {m}")


def prompt(chat: VambaChat, question: str) -> torch.Tensor:
    return torch.tensor([chat.prompt_ids([(question, None)])])


@pytest.mark.parametrize("mode", ["reference", "split"])
def test_the_same_tokens_as_generate(chat: VambaChat, video: EncodedVideo, mode: str) -> None:
    chat.model.config.decode_attention = mode
    try:
        for question, n in zip(QUESTIONS, (1, 9, 4)):
            ids = prompt(chat, question)
            want_logits, got_logits = [], []
            want = reference(chat, ids, video.cache, n, chat.eos_token_ids, logits=want_logits)
            got = greedy_decode(chat.model, ids, video.cache, n, chat.eos_token_ids, chat.pad_token_id,
                                scores=got_logits)
            assert got.tolist() == want.tolist(), question
            assert_same_logits(got_logits, want_logits)
            assert got.shape[1] == ids.shape[1] + n  # the tiny random model never says eos here
    finally:
        chat.model.config.decode_attention = "auto"


def test_eos_and_min_new_tokens(chat: VambaChat, video: EncodedVideo) -> None:
    ids = prompt(chat, QUESTIONS[1])
    free = reference(chat, ids, video.cache, 12, [])[0, ids.shape[1]:].tolist()
    # an eos that first appears at the fourth new token: the reply ends there (eos included)
    at = next(i for i in range(2, 12) if free[i] not in free[:i])
    stop = free[at]
    for min_new in (0, at + 2):
        want = reference(chat, ids, video.cache, 12, [stop], min_new_tokens=min_new)
        got = greedy_decode(chat.model, ids, video.cache, 12, [stop], chat.pad_token_id, min_new_tokens=min_new)
        assert got.tolist() == want.tolist()
    assert greedy_decode(chat.model, ids, video.cache, 12, stop)[0, ids.shape[1]:].tolist() == free[:at + 1]


@pytest.mark.parametrize("mode", ["reference", "split"])
def test_questions_batched_against_one_video_answer_as_one_at_a_time(chat: VambaChat, video: EncodedVideo,
                                                                     mode: str) -> None:
    """Left-padded prompts about one cached video (one cache row read by every prompt): each row's reply is the
    reply to its question alone, and the whole batch equals generate's batch over a repeated cache."""
    chat.model.config.decode_attention = mode
    try:
        prompts = [chat.prompt_ids([(q, None)]) for q in QUESTIONS]
        width = max(map(len, prompts))
        ids = torch.tensor([[chat.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        # an eos that ends one of the replies early: the other rows go on, the finished one gets pad tokens
        alone = [reference(chat, prompt(chat, q), video.cache, 6, [])[0, -6:].tolist() for q in QUESTIONS]
        stop = alone[1][2]
        got_logits, want_logits = [], []
        got = greedy_decode(chat.model, ids, video.cache, 6, [stop], chat.pad_token_id, attention_mask=mask,
                            scores=got_logits)
        want = reference(chat, ids, video.cache.select([0, 0, 0]), 6, [stop], mask=mask, logits=want_logits)
        assert got.tolist() == want.tolist()
        assert_same_logits(got_logits, want_logits)
        for row, reply in zip(got[:, width:].tolist(), alone):
            end = reply.index(stop) + 1 if stop in reply else len(reply)
            assert row[:end] == reply[:end] and set(row[end:]) <= {chat.pad_token_id}
    finally:
        chat.model.config.decode_attention = "auto"


def test_chat_reply_switch(chat: VambaChat, video: EncodedVideo) -> None:
    for question in QUESTIONS[:2]:
        fast = chat.reply(video, question, max_new_tokens=6, decode="static")
        assert fast == chat.reply(video, question, max_new_tokens=6, decode="generate")
        assert fast == chat.reply(video, question, max_new_tokens=6)  # auto on the CPU: generate
    with pytest.raises(ValueError, match="decode must be one of"):
        chat.reply(video, QUESTIONS[0], decode="fast")
    with pytest.raises(ValueError, match="sampling"):
        chat.reply(video, QUESTIONS[0], do_sample=True, decode="static")
    chat.model.generation_config.repetition_penalty = 1.05  # a setting of Qwen2-VL-Instruct's generation_config
    try:
        with pytest.raises(ValueError, match="repetition_penalty=1.05"):
            chat.reply(video, QUESTIONS[0], max_new_tokens=2, decode="static")
    finally:
        chat.model.generation_config.repetition_penalty = 1.0


class _HostReads(TorchDispatchMode):
    """Records the ops that make the host wait for a device value (``.item()``, ``bool(t)``, ``nonzero``): a CUDA
    graph cannot capture them."""

    SYNCING = ("aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["split", "reference"])
def test_the_decoding_step_never_reads_a_device_value_on_the_host(chat: VambaChat, video: EncodedVideo,
                                                                  mode: str) -> None:
    """What CUDA-graph capture needs, checked on the CPU: the step (all layers, the split or the SDPA cross-attention)
    dispatches no op that syncs the host; the loop around it does (eos), outside the graph."""
    chat.model.config.decode_attention = mode
    steps = []
    original = _Step.__call__

    def watched(self):
        with _HostReads() as reads:
            out = original(self)
        steps.append(reads.seen)
        return out

    try:
        _Step.__call__ = watched
        ids = prompt(chat, QUESTIONS[0])
        greedy_decode(chat.model, ids, video.cache, 3, chat.eos_token_ids, chat.pad_token_id)
    finally:
        _Step.__call__ = original
        chat.model.config.decode_attention = "auto"
    assert steps == [[], []]
