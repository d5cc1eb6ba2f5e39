"""The peers figure: accuracy on the mode against measured speedup, and against parameters
stored per mode (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from taugate.bundle.atomic import write_bytes
from taugate.lab.report.figures import new_figure, to_png


def write_peers_plot(path: Path, doc: dict) -> Path:
    rows = doc["rows"]
    b = 256 if f"speedup_b{256}" in rows[0] else doc["timing"]["batches"][-1]
    fig = new_figure(11, 4.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for k, r in enumerate(rows):
        c = f"C{k}"
        ax1.plot(r[f"speedup_b{b}"], r["acc_mode"], "o", color=c, label=r["model"])
        ax1.plot(r[f"speedup_b{b}"], r["acc_other"], "x", color=c)
        ax2.plot(max(r["stored_per_mode"], 1), r["acc_mode"], "o", color=c, label=r["model"])
        ax2.plot(max(r["stored_per_mode"], 1), r["acc_other"], "x", color=c)
    ax1.set(xlabel=f"speedup vs dense fp32 (batch {b}, measured)",
            ylabel="test accuracy (o: the mode, x: the other mode)",
            title=f"{doc['mode']}: accuracy vs measured speedup")
    ax2.set_xscale("log")
    ax2.set(xlabel="parameters stored per mode (log; dense: 0 shown as 1)",
            title="accuracy vs what a mode costs to store")
    ax1.legend(fontsize=7)
    m = doc["machine"]
    footer = (f"taugate peers: {doc['mode']} (other: {doc['other']}); every model in one run, "
              f"timed interleaved with dense fp32 ({doc['timing']['repeats']} rounds, "
              f"{doc['timing']['threads']} thread); {m.get('cpu')}, {m.get('cpu_count')} CPUs, "
              f"onnxruntime {m.get('onnxruntime')}, load average {m.get('loadavg_at_end')}.")
    return write_bytes(path, to_png(fig, footer))
