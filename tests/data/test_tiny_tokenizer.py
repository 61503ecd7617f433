from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from vamba.data.chat import SPECIAL_TOKENS
from vamba.data.tiny_tokenizer import build_tiny_tokenizer


def test_build_save_reload(tmp_path: Path) -> None:
    corpus = ["A red circle appears, then a blue square.", "How many times did the green triangle appear?"]
    tok = build_tiny_tokenizer(tmp_path, corpus, vocab_size=300)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == len(again) <= 300 + len(SPECIAL_TOKENS)
    text = "<|im_start|>user\n<|vision_start|><|vision_end|>How many times did the red circle appear?<|im_end|>\n"
    ids = again(text, add_special_tokens=False)["input_ids"]
    assert again.decode(ids) == text  # byte-level: lossless
    for t in SPECIAL_TOKENS:  # each special token is one id and never split
        assert len(again(t, add_special_tokens=False)["input_ids"]) == 1
    assert again.eos_token == "<|im_end|>" and again.pad_token == "<|endoftext|>"
    assert build_tiny_tokenizer(None, corpus, vocab_size=300).get_vocab() == tok.get_vocab()  # deterministic
