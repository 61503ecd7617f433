from __future__ import annotations

import pytest

from vamba.data.chat import (
    IGNORE_INDEX,
    Message,
    SampleError,
    encode_chat,
    insert_vision_markers,
    messages_from_llava,
    render_prompt,
)


def test_eval_prompt_is_the_released_template() -> None:
    # the released prompts: "<video> " + TEXT, "<video> " replaced by the marker, qwen2 template
    messages = insert_vision_markers([Message("user", "<video> What is shown?")], 1)
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|vision_end|>What is shown?<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(messages, add_generation_prompt=True) == expected


def test_labels_cover_only_assistant_replies(tokenizer) -> None:
    messages = insert_vision_markers(messages_from_llava([
        {"from": "human", "value": "<video>\nWhat colour was the circle?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Describe the video."}, {"from": "gpt", "value": "A red circle."}]), 1)
    enc = encode_chat(messages, tokenizer)
    text = render_prompt(messages)
    assert enc.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    targets = [i if lab != IGNORE_INDEX else None for i, lab in zip(enc.input_ids, enc.labels)]
    spans, cur = [], []
    for t in targets:
        if t is None:
            if cur:
                spans.append(tokenizer.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert spans == ["Red.<|im_end|>", "A red circle.<|im_end|>"]
    assert all(lab == i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX)


def test_own_system_prompt_and_chat_template_agree(tokenizer) -> None:
    messages = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello.")]
    assert render_prompt(messages).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    as_dicts = [{"role": m.role, "content": m.content} for m in messages[1:]]
    assert tokenizer.apply_chat_template(as_dicts, tokenize=False) == render_prompt(messages[1:])


def test_markers_inserted_without_placeholders_and_per_item() -> None:
    out = insert_vision_markers([Message("user", "Compare."), Message("assistant", "Same.")], 2)
    assert out[0].content == "<|vision_start|><|vision_end|>" * 2 + "Compare."
    two = insert_vision_markers([Message("user", "<image>\nLeft, <image> right?")], 2)
    assert two[0].content == "<|vision_start|><|vision_end|>Left, <|vision_start|><|vision_end|>right?"
    assert insert_vision_markers([Message("user", "Just text.")], 0)[0].content == "Just text."


@pytest.mark.parametrize("messages, num_media, match", [
    ([Message("user", "<image> <image>")], 1, "2 media placeholders for 1"),
    ([Message("user", "a"), Message("assistant", "<video> b")], 1, "outside a user turn"),
    ([Message("assistant", "no user")], 1, "no user turn"),
])
def test_inconsistent_placeholders_are_malformed(messages, num_media: int, match: str) -> None:
    with pytest.raises(SampleError, match=match):
        insert_vision_markers(messages, num_media)


def test_bad_conversations(tokenizer) -> None:
    with pytest.raises(SampleError, match="non-empty list"):
        messages_from_llava([])
    with pytest.raises(SampleError, match="bad conversation turn"):
        messages_from_llava([{"from": "robot", "value": "x"}])
    with pytest.raises(SampleError, match="no assistant reply"):
        encode_chat([Message("user", "question only")], tokenizer)
