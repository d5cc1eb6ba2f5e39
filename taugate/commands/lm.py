"""The language-model walk-through (what `make lm` runs): pretrain a byte-level LLaMA-layout
decoder on the standard library's code and pydoc's prose (text that ships with Python), train
one TauGate mode per domain on the FFN units with the sparse recipe, and measure each mode
against the dense frozen model: held-out perplexity, FFN MACs kept, and, with the ONNX decode
export, batch-1 decode tokens/s and greedy agreement. Every stage resumes from what OUT holds.
Writes OUT/results.json (docs/lm.md)."""

from __future__ import annotations

HELP = "pretrain a small language model and train per-domain FFN modes (what `make lm` runs)"


def add_arguments(p) -> None:
    from taugate.lab.lm import SIZES

    p.add_argument("--out", default="out/lm", help="output directory (default out/lm); "
                   "rerun with the same OUT to resume")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="walk-through size (default: default; toy: seconds, for tests; small: "
                        "a reduced run for a loaded machine; narrow: the earlier shape, an FFN 4x "
                        "the width)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's default)")
    p.add_argument("--no-export", action="store_true",
                   help="skip the ONNX decode export and its measurements")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from taugate.commands._common import format_table
    from taugate.lab.lm import run as walk_through

    if args.threads < 0:
        raise SystemExit(f"--threads: expected >= 0, got {args.threads}")
    r = walk_through(args.out, args.size, progress=not args.quiet, threads=args.threads or None,
                     export=not args.no_export)

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = [[name, num(m["perplexity"], ".3f"), num(m["dense_perplexity"], ".3f"),
             num(m["perplexity_ratio"], ".4f"), num(m["ffn_mac_ratio"], ".2f"),
             num(m["tokens_per_s"]["fp32"], ".1f"), num(m["dense_tokens_per_s"]["fp32"], ".1f"),
             num(m["tokens_per_s"]["int8"], ".1f"), num(m["dense_tokens_per_s"]["int8"], ".1f"),
             "-" if m["greedy_match"] is None else str(m["greedy_match"])]
            for name, m in r["modes"].items()]
    print(format_table(["mode", "ppl", "dense ppl", "ppl ratio", "FFN MACs x", "tok/s fp32",
                        "dense fp32", "tok/s int8", "dense int8", "greedy match"], rows))
    print(f"python {r['python']}; onnx: {r['onnx']}; {r['seconds']['total']:.0f} s")
    print(f"wrote {args.out}/results.json")
    return 0
