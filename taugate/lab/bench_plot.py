"""``taugate bench --plot``: measured speedup against batch size, one panel per thread count,
one line per (mode, precision), the MAC ratio of each mode dashed, the per-call floor's ceiling
(dense fp32 / floor) drawn in (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from taugate.bundle.atomic import write_bytes
from taugate.lab.report.figures import new_figure, to_png


def plot_speedup(result, path: Path, measured: str | None = None) -> Path:
    """Draw ``result`` (a :class:`taugate.bench.BenchResult`) to ``path`` (PNG); ``measured``
    says how its times were taken (default: ``taugate bench``'s medians)."""
    threads = sorted({c.threads for c in result.cells})
    fig = new_figure(5.0 * len(threads), 4.0)
    colors = {}
    for k, t in enumerate(threads, 1):
        ax = fig.add_subplot(1, len(threads), k)
        cells = [c for c in result.cells if c.threads == t]
        for mode in dict.fromkeys(c.mode for c in cells):
            mc = [c for c in cells if c.mode == mode]
            color = colors.setdefault(mode, f"C{len(colors) % 10}")
            for p, style in (("fp32", "o-"), ("int8", "s-")):
                pts = [(c.batch, c.speedup[p]) for c in mc if p in c.speedup]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=f"{mode} {p}",
                            alpha=1.0 if p == "fp32" else 0.7)
            ax.axhline(mc[0].mac_ratio, color=color, ls="--", lw=0.8)
        dense8 = [(c.batch, c.dense_int8_speedup) for c in cells
                  if c.dense_int8_speedup and c.mode == cells[0].mode]
        if dense8:
            ax.plot(*zip(*dense8), "^:", color="0.4", label="dense int8")
        ceiling = [(c.batch, c.ceiling) for c in cells if c.ceiling and c.mode == cells[0].mode]
        if ceiling:  # no model called from Python beats the per-call floor
            ax.plot(*zip(*ceiling), "k-", lw=2.0, alpha=0.35,
                    label="ceiling: dense fp32 / per-call floor")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xscale("log", base=2)
        if ceiling:  # the ceiling runs far above the modes: a log axis keeps both readable
            ax.set_yscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speedup vs dense fp32")
        ax.set_title(f"{t} intra-op thread{'s' if t > 1 else ''}")
        ax.legend(fontsize=7)
    m = result.machine
    measured = measured or (f"dense fp32 median / model median over the same interleaved "
                            f"rounds (>= {result.config.min_rounds})")
    footer = (f"taugate bench {result.bundle}: {measured}; dashed: MAC ratio per mode; grey: "
              f"the ceiling a bare onnxruntime call doing no work allows. "
              f"{m.get('cpu')}, {m.get('cpu_count')} CPUs, onnxruntime {m.get('onnxruntime')}, "
              f"load average at start {m.get('loadavg_at_start')}; providers "
              f"{result.providers}.")
    return write_bytes(path, to_png(fig, footer))
