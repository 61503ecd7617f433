"""VAMBA: hybrid Mamba-2 / Transformer video language model (Ren et al., 2025).

Layers, lower never importing higher (docs/design.md): ``utils`` -> ``ops`` -> ``models``; ``data`` beside
``models``; ``parallel`` on ``models``; ``evaluation``, ``inference`` and ``training`` above them; ``recipes`` and
``bench`` on top, imported only by ``cli``.
"""

__version__ = "0.1.0"
