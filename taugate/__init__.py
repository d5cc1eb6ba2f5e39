"""taugate: mode-specialized conditional compute (TauGate, arXiv 2602.11726).

Subpackages: ``taugate.training`` (torch), ``taugate.exporting`` (numpy + onnx),
``taugate.runtime`` (numpy + onnxruntime only). This module imports nothing heavy.
"""

__version__ = "0.1.0"
