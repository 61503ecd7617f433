"""Video/image decoding, frame sampling, processing, dataset formats, packing, synthetic data.

Modules, in data-flow order: ``video`` (readers, timeout, fallback) and ``sampling`` (which frames),
``vision`` (resize + Qwen2-VL patches), ``chat`` (template, labels), ``formats`` (record readers),
``mixture`` (YAML mixtures), ``dataset`` (processing with counted skips), ``packing`` (token-budget rows),
``collate`` (the batch of docs/batch.md), ``teacher_view`` (that batch as transformers' Qwen2-VL reads it),
``processor`` and ``video_processor`` (the HF processor), ``synth`` (synthetic data), ``tiny_tokenizer``. See
docs/data.md. This package imports only ``vamba.utils`` of ours (docs/design.md).
"""
