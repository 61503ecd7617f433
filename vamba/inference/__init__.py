"""Streaming video prefill, chat, the evaluation adapters (VAMBA and Qwen2-VL) and checkpoint conversion
(docs/inference.md)."""
