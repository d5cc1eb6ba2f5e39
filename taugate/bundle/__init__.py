"""The bundle format: schema, reading and verifying, the writer's file helpers.

stdlib + numpy only (a test enforces that it never imports torch, onnx or onnxruntime), so the
exporter that writes bundles and the runtime that reads them share one definition of the format
(docs/bundle-format.md): manifest schema and names, verified file reads, safetensors, the
materialization of shared-backbone graphs, and the checks every ONNX graph must pass.
"""
