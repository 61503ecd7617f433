"""Helpers shared by every layer: logging, loss-free file writes, process-group tear-down, the benchmarks' timing
helper (``timing``) and what a result was made with (``provenance``: commit, versions, devices)."""
