"""Markdown sections from the sweep and reproduce outputs, and the other benchmarks' table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from taugate.lab.report import figures
from taugate.lab.report.collect import BenchData, ReproduceData, SweepData
from taugate.lab.report.render import Section, fa, figure_md, fx, missing, table
from taugate.summaries import units_kept


def _units(kept, total) -> str:
    """``"66;92"`` and ``"128;128"`` (per hidden layer) -> ``"66/128 92/128"``."""
    if kept is None:
        return "–"
    return units_kept(str(kept).split(";"), str(total).split(";") if total is not None else None)


def sweep_section(sweep: SweepData | None, sweep_path) -> Section:
    title = "## Accuracy against MAC ratio (sweep)\n"
    if sweep is None or not sweep.rows:
        return title + "\n" + missing(f"Sweep results under `{sweep_path}`",
                               f"run `taugate sweep --out {sweep_path}` to produce them")[0], {}
    rows = sweep.rows
    png = figures.pareto_figure(rows, sweep.machine)
    speed_cols = sorted((k for k in rows[0] if k.startswith("speedup_b")),
                        key=lambda k: int(k[len("speedup_b"):]))
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        front = set(figures.pareto_front([(figures.sweep_x(r), r["acc_mode"]) for r in mine]))
        for r in sorted(mine, key=figures.sweep_x):
            if (figures.sweep_x(r), r["acc_mode"]) not in front:
                continue
            out.append([mode, r.get("width", "–"), r.get("strength", "–"),
                        _units(r.get("units_kept"), r.get("units_total")), fx(figures.sweep_x(r)),
                        fa(r["acc_mode"]), fa(r.get("acc_other")), fa(r.get("dense_acc_mode"))]
                       + [fx(r[c]) if r.get(c) is not None else "–" for c in speed_cols])
    text = [title, figure_md("accuracy_vs_mac_ratio.png", "accuracy against MAC ratio"), "",
            (f"{len(rows)} sweep configurations from `{sweep.path}`; the table lists the Pareto "
            f"front per mode (no other configuration is both faster in MACs and more accurate). "
            f"*acc other*: the same subnetwork on the other mode's test set; measured speedups "
            f"are from the sweep's own side-by-side timing."), "",
            table(["mode", "width", "strength", "units kept", "ideal speedup", "acc mode",
                   "acc other", "dense acc"] + [c.replace("speedup_b", "speedup b") for c in
                                                speed_cols], out), ""]
    return "\n".join(text), {"accuracy_vs_mac_ratio.png": png}


def entries_from_summary(summary: dict) -> tuple[list[dict], str, list[str], int, str]:
    adapt, evs = summary["adapt_mode"], list(summary["eval_modes"])
    paper = (summary.get("paper_reference") or {})
    ref = {**paper.get("table1", {}), **paper.get("table2", {})}
    entries = []
    for method, per_adapt in summary["methods"].items():
        e = per_adapt.get(adapt)
        if not e:
            continue
        acc = {ev: (e["accuracy"][ev]["mean"], e["accuracy"][ev]["std"]) for ev in evs
               if e["accuracy"].get(ev)}
        if len(acc) != len(evs):
            continue
        pref = {ev: ref.get(method, {}).get(ev, [None])[0] for ev in evs}
        entries.append({"method": method, "label": e.get("label", method), "acc": acc,
                        "params": e.get("trainable_params"), "paper": pref})
    cfg = summary.get("config", {})
    return entries, adapt, evs, len(cfg.get("seeds", [])) or 1, cfg.get("device_used", "?")


def _entries_from_rows(rows: list[dict]) -> tuple[list[dict], str, list[str], int, str]:
    adapts = [r["adapt_mode"] for r in rows]
    adapt = max(set(adapts), key=adapts.count)
    evs = list(dict.fromkeys(r["eval_mode"] for r in rows))
    acc: dict = defaultdict(lambda: defaultdict(list))
    params = {}
    for r in rows:
        if r["adapt_mode"] == adapt:
            acc[r["method"]][r["eval_mode"]].append(float(r["accuracy"]))
            params[r["method"]] = r.get("trainable_params")
    entries = []
    for method, per_ev in acc.items():
        stats = {ev: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                 for ev, v in per_ev.items()}
        if len(stats) == len(evs):
            entries.append({"method": method, "label": method, "acc": stats,
                            "params": params[method], "paper": {}})
    return entries, adapt, evs, len({r["seed"] for r in rows}), "?"


def reproduce_section(rep: ReproduceData | None, rep_path) -> Section:
    title = "## The paper's Figure 1: accuracy per method\n"
    if rep is None or (not rep.rows and not rep.summary):
        return title + "\n" + missing(f"Reproduce results under `{rep_path}`",
                               f"run `taugate reproduce --out {rep_path}` to produce them")[0], {}
    source = "summary.json" if rep.summary else "results.csv"
    entries, adapt, evs, seeds, device = (entries_from_summary(rep.summary) if rep.summary
                                          else _entries_from_rows(rep.rows))
    if not entries:
        return title + f"\n_No complete method results in `{rep.path / source}`._\n", {}
    png = figures.method_accuracy_figure(entries, adapt, evs, seeds, device)
    rows = [[e["label"], e["params"] if e["params"] is not None else "–"]
            + [f"{e['acc'][ev][0]:.4f} ± {e['acc'][ev][1]:.4f}" for ev in evs]
            + [fa(e["paper"].get(ev)) for ev in evs] for e in entries]
    text = [title, figure_md("method_accuracy.png", "accuracy per method"), "",
            (f"Every method specialized to {adapt}, evaluated on each test set: mean ± std over "
            f"{seeds} seed(s), from `{rep.path / source}`; *paper*: arXiv 2602.11726's reported "
            f"means, as recorded in summary.json."), "",
            table(["method", "trainable params"] + [f"acc {ev}" for ev in evs]
                  + [f"paper {ev}" for ev in evs], rows), ""]
    return "\n".join(text), {"method_accuracy.png": png}


def _scalars(info: dict) -> str:
    parts = []
    for k, v in info.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def other_section(bench: BenchData | None) -> Section:
    if bench is None or not bench.other:
        return "", {}
    rows = [[o["name"], f"{o['stats'].get('median', float('nan')) * 1e6:.1f}",
             f"{o['stats'].get('iqr', float('nan')) * 1e6:.1f}", o["stats"].get("rounds", "–"),
             _scalars(o["extra_info"]) or "–"] for o in bench.other]
    text = ["## Other benchmarks\n",
            (f"pytest-benchmark statistics of the remaining benchmarks in `{bench.path}` (runtime "
            f"overhead, mode switching, HTTP load); their ratios are in the last column. "
            f"Machine: {figures.machine_line(bench.machine)}."), "",
            table(["benchmark", "median µs", "IQR µs", "rounds", "measured (extra_info)"], rows), ""]
    return "\n".join(text), {}
