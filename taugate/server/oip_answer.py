"""The Open Inference Protocol's inference answer: JSON tensors, or with any output asked as
binary the JSON header followed by the raw little-endian tensors (the binary tensor data
extension, announced by the same ``Inference-Header-Content-Length`` header as a request's).
"""

from __future__ import annotations

import numpy as np

from taugate.server.messages import HttpResponse, json_bytes
from taugate.server.oip_body import HEADER_LENGTH, VERSION, InferRequest


def encode_infer(mode: str, request: InferRequest, results: dict, specs: dict,
                 parameters: dict | None = None):
    """The inference answer: JSON, or JSON + raw tensors when any output is binary
    (``parameters``: the answer's own, if any)."""
    outputs, chunks = [], []
    for name, binary in request.outputs:
        value, spec = results[name], specs[name]
        out = {"name": name, "datatype": spec.datatype, "shape": list(value.shape)}
        if binary:
            raw = np.ascontiguousarray(value, dtype=spec.dtype).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = value.reshape(-1).tolist()
        outputs.append(out)
    answer = {"model_name": mode, "model_version": VERSION, "outputs": outputs}
    if parameters:
        answer["parameters"] = parameters
    if request.id is not None:
        answer = {"id": request.id, **answer}
    if not chunks:
        return HttpResponse.json(answer)
    header = json_bytes(answer)
    return HttpResponse(200, b"".join([header, *chunks]),
                        {"content-type": "application/octet-stream",
                         HEADER_LENGTH: str(len(header))})
