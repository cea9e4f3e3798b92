"""Training rfstream's learned detectors (needs the ``train`` extra: torch).

``rfstream.train.cli`` imports without torch; every other module here imports it.
Pipeline: SigMF recordings → :mod:`.dataset` (frames as PNG + boxes, crops) →
:mod:`.autotune` (hyper-parameters) → :mod:`.trainer` (k-fold, early stopping)
→ :mod:`.export` (ONNX with rfstream metadata, validated against torch).
"""
