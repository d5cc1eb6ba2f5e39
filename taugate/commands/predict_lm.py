"""``taugate predict BUNDLE --mode M --prompt TEXT``: stream text from a language-model bundle
(format_version 3) to stdout, as it is generated (taugate.runtime.generate.Generator).
``--mode auto``: the mode the bundle's prompt router names (stderr says which); ``--unknown``
refuses a prompt of no known domain or generates it with the dense model."""

from __future__ import annotations

import sys


def add_lm_arguments(p) -> None:
    g = p.add_argument_group("language-model bundles (generate text instead of classifying)")
    g.add_argument("--prompt", default=None, help="text to continue (UTF-8)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens (bytes) to generate (default: 64, or what fits the context)")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="0 (default): greedy; > 0: sample from softmax(logits / temperature)")
    g.add_argument("--top-k", type=int, default=None,
                   help="sample only from the k most likely tokens")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--precision", default="fp32", help="fp32 (default) or int8")
    g.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")


def run_lm(args) -> int:
    from taugate.bundle.names import AUTO
    from taugate.runtime.generate import Generator, encode

    if args.prompt is None:
        raise ValueError("expected FILE arguments to classify, or --prompt TEXT for a "
                         "language-model bundle")
    if args.files:
        raise ValueError(f"--prompt generates text: expected no FILE arguments, got "
                         f"{len(args.files)}")
    if args.mode == AUTO:
        from taugate.runtime.lm_auto import RoutedGenerator

        auto = RoutedGenerator.open(args.bundle, args.precision, args.threads, args.unknown)
        route, mode = auto.choose(args.prompt)
        print(f"routed to {mode} (router: {route.mode}, confidence {route.confidence:.2f})",
              file=sys.stderr)
        gen = auto.open_mode(mode)
    else:
        gen = Generator.open(args.bundle, args.mode, args.precision, args.threads)
    n = args.max_new_tokens
    if n is None:
        n = max(1, min(64, gen.shape.context - len(encode(args.prompt))))
    pieces = gen.text(args.prompt, n, temperature=args.temperature,
                      top_k=args.top_k, seed=args.seed)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
