"""Export stage (numpy + onnx): hardened layers -> pruned, compacted ONNX graphs -> bundle.

Knows nothing about which adaptation method produced a model and never imports torch.
"""
