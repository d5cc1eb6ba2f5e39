"""Figure 1: grouped bars of every method's accuracy per evaluation mode (matplotlib, Agg).

Built on ``matplotlib.figure.Figure`` without pyplot, so no global state and no display
backend is touched; returns the encoded bytes and ``protocol`` writes them atomically.
"""

from __future__ import annotations

import io

import numpy as np

from taugate.training.data import mode_title
from taugate.training.experiment.config import ABLATION_METHODS, TABLE1_METHODS


def accuracy_figure(summary: dict, formats: tuple[str, ...] = ("pdf", "png")) -> dict[str, bytes]:
    """``{format: bytes}`` of the grouped bar chart; error bars are the std over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    adapt, evs = summary["adapt_mode"], summary["eval_modes"]
    names = [m for m in (*TABLE1_METHODS, *ABLATION_METHODS)
             if adapt in summary["methods"].get(m, {})]
    entries = [summary["methods"][m][adapt] for m in names]
    fig = Figure(figsize=(1.3 * len(names) + 2.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.8 / len(evs)
    lows = []
    for k, ev in enumerate(evs):
        means = np.array([e["accuracy"][ev]["mean"] for e in entries])
        stds = np.array([e["accuracy"][ev]["std"] for e in entries])
        lows.append((means - stds).min())
        ax.bar(x + (k - (len(evs) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=f"{mode_title(ev)} test")
    # bars start near the lowest value: the differences are a few points of accuracy
    ax.set_ylim(max(0.0, np.floor(min(lows) * 20 - 1) / 20), 1.0)
    ax.set_xticks(x)
    ax.set_xticklabels([e["label"].replace(" (", "\n(") for e in entries], fontsize=8)
    ax.set_ylabel("test accuracy")
    n = len(summary["config"]["seeds"])
    ax.set_title(f"Specialized to {mode_title(adapt)}: mean ± std over {n} seed(s)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = {}
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150)
        out[fmt] = buf.getvalue()
    return out
