"""Markdown sections of the report from the benchmark JSON and the bundle (pure: text + PNGs).

Each section function returns ``(markdown, {figure file name: PNG bytes})``; a missing input
gives a short section that names the command producing it. Every number printed comes from
the inputs.
"""

from __future__ import annotations

from taugate.lab.report import figures, figures_units, units
from taugate.lab.report.collect import BenchData, BundleFacts
from taugate.summaries import units_kept

Section = tuple[str, dict]


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table (cells already formatted)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fx(v: float) -> str:
    return f"{v:.2f}×"


def fa(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def figure_md(name: str, alt: str) -> str:
    return f"![{alt}](figures/{name})"


def missing(what: str, how: str) -> Section:
    return f"_{what} not found: {how}._\n", {}


def _kept(kept, total) -> str:
    return units_kept(kept, total) if kept and total else "–"


def headline(bench: BenchData | None) -> Section:
    """The few numbers a reader wants first: the pruning modes' speedups and accuracies."""
    if bench is None or not bench.latency:
        return "", {}
    shown, _ = figures.plotted_modes(bench.latency)
    acc = {a["model"]: a for a in bench.accuracy}
    dense = acc.get("dense")
    threads = min(r["threads"] for r in bench.latency)
    lines = []
    for mode in shown:
        rows = sorted((r for r in bench.latency if r["mode"] == mode and r["threads"] == threads),
                      key=lambda r: r["batch"])
        if not rows:
            continue
        big, one = rows[-1], rows[0]
        text = (f"- **{mode}** ({big['method']}, units {_kept(big['units_kept'], big['units_total'])},"
                f" ideal {fx(big['mac_ratio'])}): speedup over dense {fx(big['speedup_ort'])} at "
                f"batch {big['batch']} and {fx(one['speedup_ort'])} at batch {one['batch']} "
                f"(bare onnxruntime, {threads} thread{'s' if threads != 1 else ''}); through "
                f"ModeRuntime {fx(big['speedup_runtime'])} / {fx(one['speedup_runtime'])}")
        if mode in acc and dense:
            own = acc[mode]["data_mode"]
            text += (f"; accuracy on {own} {fa(acc[mode]['accuracy'][own])} vs dense "
                     f"{fa(dense['accuracy'].get(own))}")
        lines.append(text + ".")
    return "## Headline\n\n" + "\n".join(lines) + "\n", {}


def latency_section(bench: BenchData | None, bench_path: str) -> Section:
    title = "## Speedup against batch size\n"
    if bench is None:
        return title + "\n" + missing(f"Benchmark JSON `{bench_path}`",
                               "run `make bench` to produce it")[0], {}
    if not bench.latency:
        return (title + "\n_The benchmark JSON holds no latency benchmarks "
                "(benchmarks/test_bench_latency.py)._\n"), {}
    png = figures.speedup_figure(bench.latency, bench.machine)
    rounds = [r["rounds"] for r in bench.latency]
    text = [title, figure_md("speedup_vs_batch.png", "speedup against batch size"), "",
            (f"Speedup = median latency of the dense model / median latency of the mode's "
            f"compacted subnetwork, timed interleaved in one process ({min(rounds)}-"
            f"{max(rounds)} rounds per cell); *ideal* = dense MACs / mode MACs. Each cell: bare "
            f"onnxruntime / through `ModeRuntime.run`. Machine: {figures.machine_line(bench.machine)}."),
            ""]
    batches = sorted({r["batch"] for r in bench.latency})
    for t in sorted({r["threads"] for r in bench.latency}):
        rows = []
        for mode in dict.fromkeys(r["mode"] for r in bench.latency):
            by_b = {r["batch"]: r for r in bench.latency if r["mode"] == mode and r["threads"] == t}
            if not by_b:
                continue
            first = next(iter(by_b.values()))
            rows.append([mode, first["method"], _kept(first["units_kept"], first["units_total"]),
                         fx(first["mac_ratio"])]
                        + [f"{fx(by_b[b]['speedup_ort'])} / {fx(by_b[b]['speedup_runtime'])}"
                           if b in by_b else "–" for b in batches])
        dense = {r["batch"]: r["medians_us"]["dense_ort"] for r in bench.latency
                 if r["threads"] == t}
        rows.append(["_dense median, µs_", "", "", ""]
                    + [f"{dense[b]:.1f}" if b in dense else "–" for b in batches])
        text += [f"**{t} intra-op thread{'s' if t != 1 else ''}**", "",
                 table(["mode", "method", "units kept", "ideal"] + [f"batch {b}" for b in batches],
                       rows), ""]
    return "\n".join(text), {"speedup_vs_batch.png": png}


def accuracy_section(bench: BenchData | None) -> Section:
    title = "## Accuracy of every exported method and mode\n"
    if bench is None or not bench.accuracy:
        return title + "\n" + missing("Accuracy benchmarks", "run `make bench` to produce them")[0], {}
    data_modes = list(dict.fromkeys(m for a in bench.accuracy for m in a["accuracy"]))
    rows = []
    for a in bench.accuracy:
        rows.append([a["model"], a["method"], a["data_mode"] or "–",
                     _kept(a.get("units_kept"), a.get("units_total")), fx(a["mac_ratio"])]
                    + [fa(a["accuracy"].get(m)) for m in data_modes]
                    + [fa(a.get("export_test_accuracy")), fa(a.get("export_unpruned_test_accuracy"))])
    first = bench.accuracy[0]
    text = [title,
            (f"Top-1 accuracy through `ModeRuntime.predict` (onnxruntime) on {first['data']}"
            f" (bundle: {first['bundle_source']}). *trained on*: the data mode the model was "
            f"specialized to; *export* columns: the exporter's numpy measure on the same test "
            f"set, after and before pruning."), "",
            table(["model", "method", "trained on", "units kept", "ideal speedup"]
                  + [f"acc {m}" for m in data_modes] + ["export (pruned)", "export (unpruned)"],
                  rows), ""]
    return "\n".join(text), {}


def units_section(bundle: BundleFacts | None, data: str | None, bundle_path) -> Section:
    title = "## Which units fire\n"
    how = ("run `make bench` (it writes its bundle to out/bench/bundle) or pass `--bundle DIR` "
           "with a bundle from `taugate export`")
    if bundle is None:
        return title + "\n" + missing(f"Bundle `{bundle_path}`", how)[0], {}
    if not bundle.has_firing_rates():
        return title + (f"\n_The bundle at `{bundle.path}` records no `test_firing_rates` "
                        f"(exported by an older taugate): re-export it with `taugate export`._\n"), {}
    pngs = {"firing_rates.png": figures_units.firing_figure(bundle.modes, data),
            "active_overlap.png": figures_units.jaccard_figure(bundle.modes)}
    names = list(bundle.modes)
    m = units.jaccard_matrix(bundle.modes)
    rows = [[a, bundle.modes[a].get("method", "?"), f"{units.kept_fraction(bundle.modes[a]):.1%}"]
            + [f"{m[i, j]:.2f}" for j in range(len(names))] for i, a in enumerate(names)]
    text = [title, figure_md("firing_rates.png", "firing rate of every unit per mode"), "",
            (f"Firing rate of every hidden unit on each mode's test set"
            f"{f' ({data})' if data else ''}; white dots: "
            f"units pruned from that mode's subnetwork. Bundle: `{bundle.path}`."), "",
            figure_md("active_overlap.png", "Jaccard overlap of active units"), "",
            (f"Jaccard overlap of the modes' active sets over all hidden units; "
             f"{units.ACTIVE_DEFINITION}."), "",
            table(["mode", "method", "units kept"] + names, rows), ""]
    return "\n".join(text), pngs
