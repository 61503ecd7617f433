"""The Qwen2 chat template of the released VAMBA model, tokenisation and assistant-only labels.

A prompt looks like (``\\n`` are newlines)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|vision_end|>What colour ...?<|im_end|>\\n
    <|im_start|>assistant\\nRed.<|im_end|>\\n

Media placeholders ``<image>`` / ``<video>`` in user turns (LLaVA style; one following space or newline is
consumed, as the released evaluation replaces ``"<video> "``) become ``<|vision_start|><|vision_end|>``: no
pad tokens, the frames reach the model through the video stream. Labels cover each assistant reply and its
closing ``<|im_end|>`` (so the model learns to stop); everything else is -100.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
VISION_MARKER = "<|vision_start|><|vision_end|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_PLACEHOLDER = re.compile(r"<(image|video)>[ \n]?")

Role = Literal["system", "user", "assistant"]


class SampleError(ValueError):
    """A record that cannot become a correct training sample (malformed, inconsistent, too long)."""


@dataclass
class Message:
    role: Role
    content: str


def count_placeholders(text: str) -> int:
    return len(_PLACEHOLDER.findall(text))


def insert_vision_markers(messages: list[Message], num_media: int) -> list[Message]:
    """Replace ``<image>``/``<video>`` placeholders by the vision marker, one per media item in order.

    With no placeholder at all the markers are put at the start of the first user turn (as the released
    training does). A placeholder count that differs from ``num_media`` is a malformed record.
    """
    found = sum(count_placeholders(m.content) for m in messages if m.role == "user")
    stray = sum(count_placeholders(m.content) for m in messages if m.role != "user")
    if stray:
        raise SampleError("media placeholder outside a user turn")
    if found == 0 and num_media:
        first = next((i for i, m in enumerate(messages) if m.role == "user"), None)
        if first is None:
            raise SampleError("sample has media but no user turn")
        messages = list(messages)
        messages[first] = Message("user", VISION_MARKER * num_media + messages[first].content)
        return messages
    if found != num_media:
        raise SampleError(f"{found} media placeholders for {num_media} media items")
    return [Message(m.role, _PLACEHOLDER.sub(VISION_MARKER, m.content)) for m in messages]


def _segments(messages: list[Message], system_prompt: str | None, add_generation_prompt: bool
              ) -> list[tuple[str, bool]]:
    """The prompt as (text, is_target) pieces; each piece starts or ends at a special token or newline."""
    if messages and messages[0].role == "system":
        system_prompt, messages = messages[0].content, messages[1:]
    pieces: list[tuple[str, bool]] = []
    if system_prompt is not None:
        pieces.append((f"<|im_start|>system\n{system_prompt}<|im_end|>\n", False))
    for m in messages:
        if m.role == "assistant":
            pieces += [("<|im_start|>assistant\n", False), (f"{m.content}<|im_end|>", True), ("\n", False)]
        elif m.role == "user":
            pieces.append((f"<|im_start|>user\n{m.content}<|im_end|>\n", False))
        else:
            raise SampleError(f"a {m.role!r} message can only come first")
    if add_generation_prompt:
        pieces.append(("<|im_start|>assistant\n", False))
    return pieces


def render_prompt(messages: list[Message], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                  add_generation_prompt: bool = False) -> str:
    """The chat as one string (vision markers must already be in place, see ``insert_vision_markers``)."""
    return "".join(text for text, _ in _segments(messages, system_prompt, add_generation_prompt))


@dataclass
class EncodedText:
    input_ids: list[int]
    labels: list[int]


def encode_chat(messages: list[Message], tokenizer, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                add_generation_prompt: bool = False, require_target: bool = True) -> EncodedText:
    """Tokenise a chat (vision markers in place) into ids and labels masked to the assistant replies.

    Pieces are tokenised separately so the mask is exact; they split at special tokens and newlines, where
    Qwen2's pre-tokeniser splits anyway, so the ids equal those of the whole string.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_target in _segments(messages, system_prompt, add_generation_prompt):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if is_target else [IGNORE_INDEX] * len(ids)
    if require_target and all(label == IGNORE_INDEX for label in labels):
        raise SampleError("sample has no assistant reply to learn from")
    return EncodedText(input_ids, labels)


# LLaVA-style ``from`` names -> roles.
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def messages_from_llava(conversations: list[dict]) -> list[Message]:
    """``[{"from": "human"|"gpt"|"system", "value": str}, ...]`` -> messages; a bad turn raises ``SampleError``."""
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("'conversations' must be a non-empty list")
    messages = []
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in _ROLES:
            raise SampleError(f"bad conversation turn {str(turn)[:80]!r}")
        messages.append(Message(_ROLES[turn["from"]], turn["value"]))
    return messages
