"""Turn benchmark results into a report: report/README.md with PNG figures -- speedup against
batch size beside the ideal MAC ratio, accuracy of every method and mode, which units fire per
mode, accuracy against MAC ratio (from `taugate sweep`) and the paper's Figure 1 (from
`taugate reproduce`). Missing inputs are named in the report, with the command producing them."""

from __future__ import annotations

import shlex
import sys

HELP = "render benchmark, sweep and reproduce results into a markdown report with figures"


def add_arguments(p) -> None:
    p.add_argument("--bench", default="out/bench/benchmarks.json", metavar="JSON",
                   help="pytest-benchmark JSON written by `make bench` "
                        "(default out/bench/benchmarks.json)")
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="bundle whose firing rates and kept units are drawn (default: the "
                        "bundle the benchmarks ran on, as recorded in the JSON)")
    p.add_argument("--reproduce", default="experiments/out", metavar="DIR",
                   help="`taugate reproduce` output directory (default experiments/out)")
    p.add_argument("--sweep", default="out/sweep", metavar="DIR",
                   help="`taugate sweep` output directory (default out/sweep)")
    p.add_argument("--out", default="report", metavar="DIR",
                   help="where README.md and figures/ are written (default report)")


def run(args) -> int:
    from taugate.lab.report import ReportConfig, build_report

    command = "taugate " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    report = build_report(ReportConfig(bench=args.bench, bundle=args.bundle,
                                       reproduce=args.reproduce, sweep=args.sweep, out=args.out,
                                       command=command))
    print(f"report: {report.path} ({len(report.figures)} figures)")
    for name in report.missing:
        print(f"  section {name!r}: input missing (the report says how to produce it)")
    return 0
