"""Export stage: a training run's modes -> hardened, pruned, compacted ONNX graphs -> bundle.

Compaction and lowering to ONNX use torch (any module); quantization uses onnxruntime; files
are written through :mod:`taugate.bundle`. Knows nothing about which adaptation method
produced a mode: it reads each mode's :class:`taugate.spec.GatedSpec`.
"""
