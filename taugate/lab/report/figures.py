"""The report's measurement figures as PNG bytes: speedup vs batch, accuracy vs MAC ratio, and
the paper's Figure 1 (arXiv 2602.11726: accuracy per method on the 0 and 45 degree test sets).

Built on ``matplotlib.figure.Figure`` with the Agg canvas, without pyplot: no global state and
no display. Every figure carries a footer saying what was measured, where, and how often.
"""

from __future__ import annotations

import io

import numpy as np

DPI = 130


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def to_png(fig, footer: str, fmt: str = "png") -> bytes:
    """Lay out, add the footer (wrapped to the figure's width), encode (PNG by default)."""
    import textwrap

    width_chars = int(fig.get_figwidth() * 15)
    text = "\n".join(textwrap.wrap(footer, width_chars))
    lines = text.count("\n") + 1
    bottom = (0.12 + 0.16 * lines) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.text(0.01, 0.01, text, fontsize=7, color="0.3", va="bottom", ha="left")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI)
    return buf.getvalue()


def machine_line(machine: dict) -> str:
    """``CPU model, N logical CPUs, onnxruntime X`` (what every timing depends on)."""
    parts = [str(machine.get("cpu", "?"))]
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} logical CPUs")
    parts.append(f"onnxruntime {machine.get('onnxruntime', '?')}")
    if machine.get("loadavg_at_start"):
        parts.append(f"load average at start {machine['loadavg_at_start'][0]}")
    return ", ".join(parts)


def plotted_modes(latency: list[dict]) -> tuple[list[str], list[str]]:
    """Modes with a MAC ratio above 1 (plotted) and those that kept every unit (table only)."""
    modes = list(dict.fromkeys(r["mode"] for r in latency))
    ratio = {r["mode"]: r["mac_ratio"] for r in latency}
    shown = [m for m in modes if ratio[m] > 1.001] or modes
    return shown, [m for m in modes if m not in shown]


def speedup_figure(latency: list[dict], machine: dict) -> bytes:
    """Speedup over dense (median latency ratio) against batch size, one panel per thread
    count, one colour per mode; dotted: the mode's ideal speedup (dense MACs / mode MACs)."""
    from matplotlib.lines import Line2D

    threads = sorted({r["threads"] for r in latency})
    shown, hidden = plotted_modes(latency)
    fig = new_figure(5.2 * len(threads), 4.2)
    colors = [f"C{i % 10}" for i in range(len(shown))]
    top = 1.0
    axes = []
    for k, t in enumerate(threads):
        ax = fig.add_subplot(1, len(threads), k + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        for mode, color in zip(shown, colors):
            rows = sorted((r for r in latency if r["mode"] == mode and r["threads"] == t),
                          key=lambda r: r["batch"])
            if not rows:
                continue
            b = [r["batch"] for r in rows]
            ax.plot(b, [r["speedup_ort"] for r in rows], "-o", color=color, ms=4)
            ax.plot(b, [r["speedup_runtime"] for r in rows], "--s", color=color, ms=3, alpha=0.6)
            ax.axhline(rows[0]["mac_ratio"], color=color, ls=":", lw=1.2)
            top = max(top, rows[0]["mac_ratio"], *(r["speedup_ort"] for r in rows))
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in latency})
        ax.set_xticks(batches)
        ax.set_xticklabels([str(x) for x in batches])
        ax.set_xlabel("batch size")
        ax.set_title(f"{t} intra-op thread{'s' if t != 1 else ''}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over dense (latency ratio)")
    axes[0].set_ylim(0, top * 1.15)
    handles = [Line2D([], [], color=c, marker="o", label=m) for m, c in zip(shown, colors)]
    handles += [Line2D([], [], color="k", ls="-", label="bare onnxruntime"),
                Line2D([], [], color="k", ls="--", alpha=0.6, label="ModeRuntime.run"),
                Line2D([], [], color="k", ls=":", label="ideal (MAC ratio)")]
    axes[-1].legend(handles=handles, fontsize=7, loc="lower right")
    rounds = [r["rounds"] for r in latency]
    footer = (f"Measured: median latency of dense / median latency of the mode's compacted "
              f"subnetwork, both timed interleaved in the same process; {min(rounds)}-"
              f"{max(rounds)} rounds per point. Machine: {machine_line(machine)}.")
    if hidden:
        footer += f" Not drawn (every unit kept, MAC ratio 1.00): {', '.join(hidden)}."
    return to_png(fig, footer)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher x and higher y are better),
    sorted by x."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def sweep_x(row: dict) -> float:
    """Ideal speedup of a sweep row: dense MACs / mode MACs."""
    if row.get("macs") and row.get("dense_macs"):
        return row["dense_macs"] / row["macs"]
    return float(row["mac_ratio"])


def pareto_figure(rows: list[dict], machine: dict) -> bytes:
    """Accuracy on the mode's test set against the ideal speedup, per mode, per width."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    widths = sorted({r.get("width") for r in rows}, key=lambda w: (w is None, w))
    fig = new_figure(4.6 * len(modes), 4.0)
    for k, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), k + 1)
        mine = [r for r in rows if r["mode"] == mode]
        for i, w in enumerate(widths):
            pts = [r for r in mine if r.get("width") == w]
            if not pts:
                continue
            ax.scatter([sweep_x(r) for r in pts], [r["acc_mode"] for r in pts], s=18,
                       color=f"C{i}", label=f"width {w}", alpha=0.8)
            dense = [r["dense_acc_mode"] for r in pts if r.get("dense_acc_mode") is not None]
            if dense:
                ax.scatter([1.0], [dense[0]], marker="*", s=90, color=f"C{i}", edgecolor="k",
                           zorder=3)
        front = pareto_front([(sweep_x(r), r["acc_mode"]) for r in mine])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        ax.set_xlabel("ideal speedup (dense MACs / mode MACs)")
        ax.set_title(f"mode {mode}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("accuracy on the mode's test set")
    fig.axes[-1].legend(fontsize=7, loc="lower left")
    footer = (f"Measured: test accuracy of each compacted subnetwork of the sweep ({len(rows)} "
              f"configurations, one training run each; stars: the dense model). "
              f"Machine: {machine_line(machine) if machine else 'not recorded'}.")
    return to_png(fig, footer)


def method_accuracy_figure(entries: list[dict], adapt_mode: str, eval_modes: list[str],
                           seeds: int, device: str, fmt: str = "png") -> bytes:
    """The paper's Figure 1 (the one implementation; `taugate reproduce` and `taugate report`
    both draw it): per method, accuracy on each eval mode (mean +- std over seeds); black
    ticks: the paper's reported means where given."""
    from taugate.bundle.names import mode_title

    fig = new_figure(1.25 * len(entries) + 2.2, 3.9)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(entries))
    width = 0.8 / len(eval_modes)
    lows = []
    for k, ev in enumerate(eval_modes):
        means = np.array([e["acc"][ev][0] for e in entries])
        stds = np.array([e["acc"][ev][1] for e in entries])
        pos = x + (k - (len(eval_modes) - 1) / 2) * width
        ax.bar(pos, means, width, yerr=stds, capsize=3, label=f"{mode_title(ev)} test",
               color=f"C{k}")
        paper = [(p, e["paper"][ev]) for p, e in zip(pos, entries) if e["paper"].get(ev)]
        if paper:
            ax.scatter([p for p, _ in paper], [v for _, v in paper], marker="_", s=300,
                       color="k", zorder=3, label="paper" if k == 0 else None)
        lows.append(float((means - stds).min()))
        lows += [v for _, v in paper]
    ax.set_ylim(max(0.0, np.floor(min(lows) * 20 - 1) / 20), 1.0)
    ax.set_xticks(x)
    ax.set_xticklabels([e["label"].replace(" (", "\n(") for e in entries], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Specialized to {mode_title(adapt_mode)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    footer = (f"Measured: test accuracy of each method after adaptation to {adapt_mode}, "
              f"mean ± std over {seeds} seed(s) (taugate reproduce, device {device}).")
    return to_png(fig, footer, fmt)
