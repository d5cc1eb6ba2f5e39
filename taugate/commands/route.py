"""Fit a bundle's router from the run it was exported from: ``taugate route BUNDLE --run RUN``.

The router (docs/bundle-format.md, "The router") names each row's mode from the input alone
and flags rows of no known mode; it is fitted on the run's calibration splits of the bundle's
modes and written into the bundle in one atomic rewrite. ``--eval`` then measures it on the
modes' test sets (oracle routing, the dense model, ``auto``; unknown-input detection on
``--unseen`` modes of the run's source, e.g. ``invert`` for MNIST rotations) and ``--curve``
draws the threshold trade-off.
"""

from __future__ import annotations

import json

HELP = "fit a bundle's router (mode='auto' and unknown-input flags) from its run"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--run", required=True, help="the run directory the bundle was exported from")
    p.add_argument("--data-root", default=None, help="where the run's mode data lives")
    p.add_argument("--components", type=int, default=16,
                   help="columns of the router's learned projection of the input, which both "
                        "the mode classifier and the unknown distance read (default 16)")
    p.add_argument("--hidden", type=int, default=None,
                   help="router MLP hidden units; 0: mode scores linear in the input (cheapest); "
                        "default: fit both (64 hidden units) and keep the linear one unless the "
                        "MLP routes clearly more held-out rows right")
    p.add_argument("--steps", type=int, default=600,
                   help="minibatch Adam steps of the router's training (default 600)")
    p.add_argument("--percentile", type=float, default=99.0,
                   help="unknown threshold: this percentile of held-out known rows' distance "
                        "(default 99: about 1%% of known rows flagged)")
    p.add_argument("--eval", action="store_true",
                   help="measure the router on the modes' test sets and print a table")
    p.add_argument("--unseen", default="",
                   help="comma-separated modes of the run's source the bundle does not have "
                        "(e.g. invert), for the unknown-input trade-off (implies --eval)")
    p.add_argument("--rows", type=int, default=None, help="test rows per mode for --eval")
    p.add_argument("--curve", metavar="FILE.png", default=None,
                   help="draw the threshold trade-off to FILE.png (implies --eval)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the --eval report as JSON")


def fit_into_bundle(bundle, run_dir, data_root=None, cfg=None):
    """Fit ``bundle``'s router from ``run_dir``'s calibration splits and write it (the one path
    of ``taugate route`` and ``taugate export --router``); prints one line, returns
    (the loaded run, the fitted router)."""
    from taugate.exporting.router_bundle import fit_for_bundle, write_router
    from taugate.training.loaded import load_run

    loaded = load_run(run_dir, data_root)
    fitted = fit_for_bundle(bundle, loaded, cfg)
    write_router(bundle, fitted)
    hidden = fitted.facts["hidden"]
    kind = f"MLP, {hidden} hidden units" if hidden else "linear scores"
    both = fitted.facts.get("holdout_accuracy_linear_mlp")
    if both:
        kind += f"; held-out accuracy linear {both[0]:.4f}, MLP {both[1]:.4f}"
    print(f"router: {len(fitted.modes)} modes ({kind}), held-out routing accuracy "
          f"{fitted.facts['holdout_accuracy']:.4f}, unknown threshold {fitted.threshold:.4g} "
          f"(percentile {fitted.percentile:g} of held-out known rows)")
    return loaded, fitted


def run(args) -> int:
    from dataclasses import asdict

    from taugate.exporting.router import RouterConfig

    cfg = RouterConfig(components=args.components, hidden=args.hidden, steps=args.steps,
                       percentile=args.percentile)
    loaded, fitted = fit_into_bundle(args.bundle, args.run, args.data_root, cfg)
    unseen = [u for u in args.unseen.split(",") if u.strip()]
    if not (args.eval or unseen or args.curve or args.json):
        return 0
    from taugate.lab.routing import evaluate, plot, table
    from taugate.runtime import ModeRuntime
    from taugate.training.sources import open_source

    source = open_source(json.loads((loaded.path / "run.json").read_text("utf-8"))["source"],
                         args.data_root)
    tests = {m: tuple(t.numpy() for t in loaded.modes[m].test) for m in fitted.modes}
    away = {u: source.mode(u).test.x.numpy() for u in unseen}
    with ModeRuntime.open(args.bundle, providers="cpu") as rt:
        report = evaluate(rt, tests, away, args.rows)
    print(table(report))
    if args.curve:
        plot(report, args.curve)
        print(f"curve: {args.curve}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=1)
    return 0
