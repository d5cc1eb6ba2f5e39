"""``taugate lm-router BUNDLE --out NEW``: a copy of a language-model bundle with a prompt
router, so that ``--mode auto`` (predict) and the ``auto`` model (serve) route each prompt to
its domain's mode. The router is fitted on the training split of the walk-through's corpus
(the standard library's code and pydoc's prose: the bundle's modes must be those domains);
``--measure FILE`` also writes its accuracy by prompt length on the held-out split and its
cost beside one decode step (docs/lm.md, "Routing")."""

from __future__ import annotations

HELP = "add a prompt router (mode 'auto') to a language-model bundle"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="language-model bundle directory (format_version 3)")
    p.add_argument("--out", required=True, help="the new bundle's directory")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--cap", type=int, default=None,
                   help="bytes of each domain's corpus to read (default: the walk-through's, "
                        "what the modes were trained on)")
    p.add_argument("--measure", metavar="FILE.json", default=None,
                   help="also measure routing accuracy and cost, written to FILE.json")


def run(args) -> int:
    import json

    from taugate.exporting.lm_router import add_router
    from taugate.runtime.generate import read_lm_manifest
    from taugate.training.lm.corpus import DOMAINS, load_corpus

    modes = sorted(read_lm_manifest(args.bundle).modes)
    if modes != sorted(DOMAINS):
        raise ValueError(f"{args.bundle}: modes {modes}: expected the corpus domains "
                         f"{sorted(DOMAINS)} (fit other domains with "
                         f"taugate.exporting.lm_router.add_router and their texts)")
    if args.cap is not None and args.cap < 1:
        raise ValueError(f"--cap: expected a positive number of bytes, got {args.cap}")
    corpus = load_corpus(None if args.cap is None else {d: args.cap for d in DOMAINS})
    train = {d: corpus[d].train for d in DOMAINS}
    out = add_router(args.bundle, args.out, train, overwrite=args.overwrite)
    print(f"wrote {out} (router.json: mode 'auto' routes prompts to {', '.join(DOMAINS)})")
    if args.measure:
        from taugate.lab.lm_routing import measure_routing

        report = measure_routing(out, train, {d: corpus[d].held_out for d in DOMAINS})
        report["cap_bytes"] = args.cap  # None: the corpus's default caps
        with open(args.measure, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.measure}")
    return 0
