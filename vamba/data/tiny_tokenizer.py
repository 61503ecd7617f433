"""A tiny Qwen2-style tokenizer built locally (no hub access): byte-level BPE + Qwen2 special tokens.

Used by tests, the CPU demo and the tiny model: same special tokens and chat template as the released
VAMBA model, a vocabulary small enough for a model that trains on a CPU in minutes.

    tokenizer = build_tiny_tokenizer("out/tokenizer", corpus=texts)   # saved; AutoTokenizer can reload it
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vamba.data.chat import DEFAULT_SYSTEM_PROMPT, SPECIAL_TOKENS

# Qwen2 template without media pad tokens: message contents carry <|vision_start|><|vision_end|> already.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_BASE_CORPUS = (
    "You are a helpful assistant.",
    "Select the best answer to the following multiple-choice question based on the video.",
    "Respond with only the letter (A, B, C, or D) of the correct option.",
    "The answer is A. The answer is B. The answer is C. The answer is D. (A) (B) (C) (D) A. B. C. D.",
    "0 1 2 3 4 5 6 7 8 9 one two three four five six seven eight nine ten",
)


def build_tiny_tokenizer(path: str | os.PathLike | None = None, corpus: Iterable[str] = (), vocab_size: int = 512):
    """Train a byte-level BPE on ``corpus`` (plus a few prompt strings), add the Qwen2 special tokens.

    Returns a ``transformers.PreTrainedTokenizerFast`` with ``eos_token="<|im_end|>"``,
    ``pad_token="<|endoftext|>"`` and the VAMBA chat template; saved to ``path`` when given (then
    ``AutoTokenizer.from_pretrained(path)`` reloads it). Deterministic for a given corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*_BASE_CORPUS, *corpus], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=[t for t in SPECIAL_TOKENS
                                                              if t not in ("<|im_end|>", "<|endoftext|>")])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1 << 20
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(str(path))
    return fast
