"""VAMBA model: configuration, Mamba-2 video block, cross-attention, decoder, loading."""
