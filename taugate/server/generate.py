"""The generate endpoint of a language-model bundle (format_version 3), framework-free.

Modelled on Triton's generate extension:

- ``POST /v2/models/{mode}/generate`` with ``{"text_input": "...", "parameters":
  {"max_tokens": 64, "temperature": 0.0, "top_k": null, "seed": 0}}`` (every parameter
  optional; ``max_tokens`` defaults to 64 or what fits the context) answers ``{"model_name": mode, "text_output": "..."}``: the generated text only,
  UTF-8 with invalid bytes replaced; ``mode`` is ``dense`` or a mode of the bundle;
- ``GET /v2/models/{mode}`` describes a model; ``GET /health`` and ``GET /v2/health/ready``.

Bodies are parsed by the server's strict JSON reader; errors name the field and the valid
choices, never an absolute path (:class:`~taugate.server.redact.PathRedactor`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from taugate.bundle.names import DENSE
from taugate.runtime.generate import Generator, encode, read_lm_manifest
from taugate.server import strict_json
from taugate.server.messages import HttpRequest, HttpResponse
from taugate.server.redact import PathRedactor

PARAMETERS = {  # name -> (accepted JSON types, what the error says is expected)
    "max_tokens": (int, "an integer >= 1"), "temperature": ((int, float), "a number >= 0"),
    "top_k": ((int, type(None)), "an integer >= 1 or null"), "seed": (int, "an integer")}
DEFAULT_MAX_TOKENS = 64


def _error(status: int, error: str, detail: str) -> HttpResponse:
    return HttpResponse.json({"error": error, "detail": detail}, status)


class GenerateHandler:
    """Answers the generate API for the LM bundle at ``bundle`` in ``precision``."""

    def __init__(self, bundle: str | Path, precision: str = "fp32", threads: int = 1):
        self.bundle = Path(bundle)
        self.manifest = read_lm_manifest(bundle)
        self.precision, self.threads = precision, threads
        self.redact = PathRedactor(self.bundle)
        self._gens: dict[str, Generator] = {}
        self._lock = threading.Lock()
        for mode in self.models:  # fail at start for a precision the bundle lacks
            self.manifest.entry(mode).graphs.get(precision) or self._missing(mode)

    def _missing(self, mode: str):
        raise ValueError(f"precision {self.precision!r}: {mode} has "
                         f"{sorted(self.manifest.entry(mode).graphs)} in this bundle")

    @property
    def models(self) -> list[str]:
        return [DENSE, *sorted(self.manifest.modes)]

    def generator(self, mode: str) -> Generator:
        with self._lock:
            if mode not in self._gens:
                self._gens[mode] = Generator.open(self.bundle, mode, self.precision,
                                                  self.threads)
            return self._gens[mode]

    def handle(self, req: HttpRequest) -> HttpResponse:
        parts = req.path.strip("/").split("/")
        if req.method == "GET" and req.path in ("/health", "/v2/health/ready",
                                                "/v2/health/live"):
            return HttpResponse.json({"status": "ok", "kind": "lm", "models": self.models})
        if len(parts) == 3 and parts[:2] == ["v2", "models"] and req.method == "GET":
            return self.metadata(parts[2])
        if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "generate":
            if req.method != "POST":
                return _error(405, "method not allowed", f"{req.method} {req.path}: use POST")
            return self.generate(parts[2], req.body)
        return _error(404, "not found", f"{req.method} {req.path}: Not Found")

    def _unknown(self, mode: str) -> HttpResponse | None:
        if mode in self.models:
            return None
        return _error(404, "unknown model", f"model {mode!r}: no such model in this bundle; "
                                            f"choose one of {self.models}")

    def metadata(self, mode: str) -> HttpResponse:
        unknown = self._unknown(mode)
        if unknown:
            return unknown
        entry, shape = self.manifest.entry(mode), self.manifest.shape
        facts = {k: entry.facts[k] for k in ("units_kept", "units_total", "ffn_mac_ratio")
                 if k in entry.facts}
        return HttpResponse.json({"name": mode, "platform": "taugate-lm",
                                  "precision": self.precision, "context": shape.context,
                                  "tokenizer": shape.tokenizer, **facts})

    def generate(self, mode: str, body: bytes) -> HttpResponse:
        unknown = self._unknown(mode)
        if unknown:
            return unknown
        try:
            prompt, params = parse_generate_body(body)
            gen = self.generator(mode)
            # by default as many as fit the context, at most DEFAULT_MAX_TOKENS
            room = self.manifest.shape.context - len(encode(prompt))
            n = params.pop("max_tokens", max(1, min(DEFAULT_MAX_TOKENS, room)))
            text = "".join(gen.text(prompt, n, **params))
        except strict_json.JsonRefused as exc:
            return _error(exc.status, exc.error, exc.detail)
        except (ValueError, TypeError) as exc:
            return _error(422, "invalid request", self.redact(str(exc)))
        return HttpResponse.json({"model_name": mode, "text_output": text})


def parse_generate_body(body: bytes) -> tuple[str, dict]:
    """``{"text_input": str, "parameters": {...}}`` -> (prompt, parameters) with the
    parameters' types checked (values: the generator's checks)."""
    payload = strict_json.loads(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("text_input"), str):
        raise strict_json.JsonRefused(422, "invalid request body",
                                      'expected a JSON object {"text_input": "...", '
                                      '"parameters": {...}}')
    extra = sorted(set(payload) - {"text_input", "parameters"})
    if extra:
        raise ValueError(f"unknown fields {extra}: expected text_input and parameters")
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise ValueError(f"parameters: expected an object, got {type(params).__name__}")
    for key, value in params.items():
        if key not in PARAMETERS:
            raise ValueError(f"parameters: unknown {key!r}; expected some of {sorted(PARAMETERS)}")
        kind, what = PARAMETERS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"parameters.{key}: expected {what}, got {value!r}")
    return payload["text_input"], dict(params)
