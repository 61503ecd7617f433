"""Whole pipelines over the layers below: the CPU demo (``demo``: synthetic data -> teacher -> conversion -> two
training stages -> evaluation) and the miniature ablations (``ablation``: the demo's recipe per variant and seed).
Only ``vamba.cli`` imports this package (docs/design.md)."""
