"""VAMBA: hybrid Mamba-2 / Transformer video language model (Ren et al., 2025).

Layers, lower never importing higher: ``ops`` (kernels) -> ``models`` -> ``training`` / ``inference``
-> ``evaluation``; ``data`` stands beside ``models`` and imports neither. ``utils`` is shared by all.
"""

__version__ = "0.1.0"
