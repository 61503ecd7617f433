"""Measurement harnesses: they print figures and write JSON with device, versions, commit and date into
``docs/results/`` (docs/design.md, "Honest measurement"); tests check their logic, never their numbers.

``efficiency`` (``vamba bench``: VAMBA vs Qwen2-VL, memory and time vs frames; built from ``build`` (models and
inputs), ``steps`` (the measured steps), ``flops`` (model FLOPs), ``sweep`` (budgeted sweeps) and
``efficiency_report`` (summary, goals, plots)), ``memory_profile`` (where a training step's GPU memory goes),
``vision`` (the vision tower's forwards), ``model`` (VAMBA per attention backend vs Qwen2-VL), ``mamba2`` (the SSD
scan and the Mamba-2 block), ``decode`` (video decoding throughput), ``context_parallel`` (context parallelism on
one GPU). Every harness times with ``vamba.utils.timing.measure``; ``scripts/bench_*.py`` call their ``main``.
"""
