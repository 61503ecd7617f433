"""``VambaChat.reply_many``: several questions about one encoded video decoded as one left-padded batch give the
replies of ``reply`` one question at a time, token for token (float32 on the CPU, a tiny checkpoint and a video
encoded from a real mp4: tests/inference/conftest.py)."""
from __future__ import annotations

import pytest
import torch

from vamba.inference.chat import EncodedVideo, VambaChat

# Prompts of different lengths: the batch is left padded to the longest.
QUESTIONS = ["What colour was the shape?", "Describe the video.", "How many objects move from left to right "
             "across the frame before it ends?", "Why?"]
NEW = 8


def free_tokens(chat: VambaChat, video: EncodedVideo, question: str) -> list[int]:
    """The NEW tokens greedy decoding gives ``question`` alone with no eos (the tiny random model never says one)."""
    ids = torch.tensor([chat.prompt_ids([(question, None)])])
    out = chat.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=video.cache,
                              max_new_tokens=NEW, do_sample=False, temperature=None, top_p=None, top_k=None,
                              eos_token_id=[], pad_token_id=chat.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def stop(chat: VambaChat, video: EncodedVideo) -> int:
    """An eos the model does emit: a token of one reply that ends some replies early and not others."""
    free = [free_tokens(chat, video, q) for q in QUESTIONS]
    for token in dict.fromkeys(t for row in free for t in row):
        ends = [row.index(token) + 1 if token in row else NEW for row in free]
        if min(ends) < max(ends) and min(ends) < NEW:
            return token
    raise AssertionError(f"no token ends the replies at different lengths: {free}")


@pytest.mark.parametrize("decode", ["static", "generate"])
def test_a_batch_answers_as_one_question_at_a_time(chat: VambaChat, video: EncodedVideo, stop: int,
                                                   decode: str) -> None:
    alone = [chat.reply(video, q, max_new_tokens=NEW, eos_token_ids=[stop], decode=decode) for q in QUESTIONS]
    assert chat.reply_many(video, QUESTIONS, max_new_tokens=NEW, eos_token_ids=[stop], decode=decode) == alone
    # the stop token is plain text: a reply that ended at it shows it last, one that did not is longer
    assert len(set(alone)) > 1 and any(reply.endswith(chat.tokenizer.decode([stop])) for reply in alone)
    assert chat.reply_many(video, QUESTIONS[2:3], max_new_tokens=NEW, decode=decode) == [
        chat.reply(video, QUESTIONS[2], max_new_tokens=NEW, decode=decode)]


def test_the_batch_stops_where_each_reply_stops(chat: VambaChat, video: EncodedVideo, stop: int) -> None:
    """The eos ends each row where it ends that question alone; a row that never says it runs to max_new_tokens."""
    free = [free_tokens(chat, video, q) for q in QUESTIONS]
    replies = chat.reply_many(video, QUESTIONS, max_new_tokens=NEW, eos_token_ids=[stop], decode="static")
    for row, reply in zip(free, replies):
        end = row.index(stop) + 1 if stop in row else NEW
        assert reply == chat.tokenizer.decode(row[:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_nothing_to_ask_and_bad_settings(chat: VambaChat, video: EncodedVideo) -> None:
    assert chat.reply_many(video, [], max_new_tokens=NEW) == []
    with pytest.raises(ValueError, match="decode must be one of"):
        chat.reply_many(video, QUESTIONS, decode="fast")
