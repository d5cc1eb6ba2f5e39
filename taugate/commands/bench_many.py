"""``taugate bench --mixed`` / ``--auto``: several modes per call beside single-mode calls
(taugate/lab/bench_many.py), printed as a table and written with ``--json``."""

from __future__ import annotations

import json

from taugate.commands._common import format_table


def run_many_modes(args, data: dict, note: str | None) -> int:
    """Measure and print; ``data``: mode -> (x, y) test rows for the routed calls."""
    import numpy as np

    from taugate.lab.bench_many import HEADERS, run_many, table_rows

    kinds = [k for k, on in (("mixed", args.mixed), ("auto", args.auto)) if on]
    rows = None
    if data:
        rows = np.concatenate([np.asarray(x, np.float32) for x, _ in data.values()])
        rows = rows[np.random.default_rng(0).permutation(len(rows))]
    elif args.auto:
        print(f"{note or 'no test rows'}: routing random rows (most are flagged unknown)")
    result = run_many(args.bundle, kinds, tuple(args.batch or (256,)),
                      tuple(args.threads or (1,)), args.budget, args.providers, rows)
    print(format_table(HEADERS, table_rows(result)))
    m = result.machine
    print(f"{m.get('cpu')}, {m.get('cpu_count')} CPUs, onnxruntime {m.get('onnxruntime')}; "
          f"load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end")
    print("ratio = median over interleaved rounds of call / against (below 1: the call is "
          "cheaper)")
    if args.json:
        from taugate.bundle.atomic import write_text

        write_text(args.json, json.dumps(result.to_json(), indent=2))
        print(f"json: {args.json}")
    return 0
