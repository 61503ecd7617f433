"""Generation, streaming video prefill and chat."""
