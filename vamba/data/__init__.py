"""Video/image decoding, frame sampling, processing, dataset formats, packing, synthetic data."""
