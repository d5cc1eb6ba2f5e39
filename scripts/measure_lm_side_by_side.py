"""Batch-1 decode of an LM bundle's graphs side by side, against an older bundle of the same run
(issue 22, item 4): tokens/s of every model (fp32 and int8, one thread, interleaved rounds,
medians) and the mode / dense ratios, the graphs' own per-byte perplexity on held-out text (the
int8 accuracy), and the step split into its fixed part and its FFN part (the foundation's
graph rebuilt with 16 FFN units per layer: what a step costs without its FFN).

    python scripts/measure_lm_side_by_side.py --bundle out/lm/bundle --foundation out/lm \\
        --baseline old/bundle

Writes docs/measured/lm-speed-side-by-side.json with the load average before and after the
timings.
Needs taugate[train] (the foundation's weights and the corpus).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "int8")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def graph_perplexity(gen, tokens: np.ndarray, window: int, max_tokens: int) -> float:
    """Per-byte perplexity of a :class:`Generator`'s graph on ``tokens``: teacher-forced, one
    token per step (the graph returns the last position's logits), in windows of ``window``."""
    nll, n = 0.0, 0
    for start in range(0, len(tokens) - window, window):
        chunk = tokens[start:start + window].astype(np.int64)
        decoding = gen.start(1)
        for i in range(window - 1):
            logits = decoding.feed(chunk[None, i:i + 1])[0].astype(np.float64)
            z = logits - logits.max()
            nll -= z[chunk[i + 1]] - math.log(np.exp(z).sum())
            n += 1
            if n >= max_tokens:
                return math.exp(nll / n)
    return math.exp(nll / max(n, 1))


def _truncated(w, units: int):
    """The decoder's weights with the first ``units`` FFN units of each layer."""
    w = copy.deepcopy(w)
    for layer in w.layers:
        ffn = layer.down.shape[0]
        layer.gate_up = np.ascontiguousarray(np.concatenate(
            [layer.gate_up[:, :units], layer.gate_up[:, ffn:ffn + units]], axis=1))
        layer.down = np.ascontiguousarray(layer.down[:units])
    return w


def _session(data: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, help="an older bundle of the same run")
    ap.add_argument("--foundation", type=Path, help="the run's directory (foundation.*)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--eval-tokens", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=ROOT / "docs/measured/lm-speed-side-by-side.json")
    args = ap.parse_args()

    from taugate.lab.lm import PROMPT, SIZES
    from taugate.runtime.generate import Generator, read_lm_manifest

    bundles = {"new": args.bundle, **({"baseline": args.baseline} if args.baseline else {})}
    manifest = read_lm_manifest(args.bundle)
    models = ["dense", *sorted(manifest.modes)]
    gens = {(tag, m, p): Generator.open(path, m, p) for tag, path in bundles.items()
            for m in models for p in PRECISIONS}
    if args.foundation:  # the fixed part of a step: the foundation with a 16-unit FFN
        from taugate.exporting.lm_decode import decoder_weights
        from taugate.exporting.lm_graph import build_decoder
        from taugate.exporting.quantize import quantize
        from taugate.training.lm.pretrain import load_lm_foundation

        w = decoder_weights(load_lm_foundation(args.foundation)[0])
        for name, ww in (("full", w), ("ffn16", _truncated(w, 16))):
            fp32 = build_decoder(ww).SerializeToString()
            for p, data in (("fp32", fp32), ("int8", quantize(fp32, weights_only=True))):
                gens[("split", name, p)] = Generator(_session(data), manifest, "dense", p)
    for g in gens.values():
        g.decode_speed(PROMPT, 4)
    started, load_before = time.perf_counter(), _load()
    runs: dict = {k: [] for k in gens}
    for _ in range(args.rounds):
        for k, g in gens.items():
            runs[k].append(g.decode_speed(PROMPT, args.new_tokens))
    load_after, seconds = _load(), time.perf_counter() - started
    speed: dict = {}
    for (tag, m, p), rs in runs.items():
        speed.setdefault(tag, {}).setdefault(m, {})[p] = {
            key: statistics.median(r[key] for r in rs)
            for key in ("tokens_per_s", "tokens_per_s_median_step")}
    ratios = {tag: {m: {p: {key: round(v[key] / speed[tag]["dense"][p][key], 3) for key in v}
                        for p, v in per.items()} for m, per in rows.items() if m != "dense"}
              for tag, rows in speed.items() if tag != "split"}
    split = None
    if "split" in speed:
        step = {n: {p: 1e6 / speed["split"][n][p]["tokens_per_s_median_step"]
                    for p in PRECISIONS} for n in ("full", "ffn16")}
        split = {p: {"step_us": round(step["full"][p], 1), "fixed_us": round(step["ffn16"][p], 1),
                     "fixed_share": round(step["ffn16"][p] / step["full"][p], 3)}
                 for p in PRECISIONS}
    from taugate.training.lm.corpus import load_corpus

    corpus = load_corpus(SIZES["default"].caps)
    ctx = manifest.shape.context
    ppl: dict = {}
    for (tag, m, p), g in gens.items():
        if tag == "split":
            continue
        for domain in (corpus if m == "dense" else [m]):
            ppl.setdefault(tag, {}).setdefault(m, {}).setdefault(domain, {})[p] = round(
                graph_perplexity(g, corpus[domain].held_out, ctx, args.eval_tokens), 4)
    raw = {tag: json.loads((p / "manifest.json").read_text("utf-8")) for tag, p in bundles.items()}
    out = {"lm": raw["new"]["lm"],
           "quantization": {tag: m.get("quantization") for tag, m in raw.items()},
           "threads": 1, "cpu_count": os.cpu_count(), "rounds": args.rounds,
           "new_tokens": args.new_tokens, "prompt_bytes": len(PROMPT),
           "load_before": load_before, "load_after": load_after, "seconds": round(seconds, 1),
           "speed": {k: v for k, v in speed.items() if k != "split"}, "ratio_to_dense": ratios,
           "step_split": split, "eval_tokens": args.eval_tokens, "graph_perplexity": ppl}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"ratio_to_dense": ratios, "step_split": split, "load": [load_before,
                                                                          load_after]}, indent=1))


if __name__ == "__main__":
    main()
