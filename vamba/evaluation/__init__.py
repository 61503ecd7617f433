"""Benchmarks, answer extraction, metrics and the resumable evaluation runner."""
