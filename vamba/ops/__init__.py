"""Kernels: one public function per op, a fast path beside a pure-PyTorch reference."""
