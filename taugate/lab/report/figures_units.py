"""Which units fire: per-mode firing-rate heat maps and the Jaccard overlap of active sets."""

from __future__ import annotations

import numpy as np

from taugate.lab.report.figures import new_figure, to_png
from taugate.lab.report.units import ACTIVE_DEFINITION, firing_matrix, jaccard_matrix, n_layers


def firing_figure(modes: dict[str, dict], data: str) -> bytes:
    """One heat map per hidden layer: rows = modes, columns = units, colour = firing rate on
    the mode's test set; white dots mark units pruned from that mode's subnetwork."""
    names = list(modes)
    layers = n_layers(modes)
    row_h = 0.28
    fig = new_figure(10.0, sum(1.2 + row_h * len(names) for _ in range(layers)) + 0.6)
    heights = [1.0] * layers
    grid = fig.add_gridspec(layers, 2, width_ratios=[40, 1], height_ratios=heights)
    image = None
    for layer in range(layers):
        rates, pruned = firing_matrix(modes, layer)
        # the same unit order in every row, so a column is one unit across modes
        order = np.argsort(-rates.mean(axis=0), kind="stable")
        rates, pruned = rates[:, order], pruned[:, order]
        ax = fig.add_subplot(grid[layer, 0])
        image = ax.imshow(rates, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        r, c = np.nonzero(pruned)
        ax.scatter(c, r, s=4, color="white", marker="o", linewidths=0)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel(f"hidden layer {layer + 1}: {rates.shape[1]} units, sorted by mean "
                      f"firing rate across modes", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    cax = fig.add_subplot(grid[:, 1])
    fig.colorbar(image, cax=cax, label="firing rate on the mode's test set")
    footer = (f"Measured: fraction of the mode's test images{f' ({data})' if data else ''} on which each unit's gate "
              f"fires (z > t), every unit of the unpruned hardened model; white dots: units "
              f"pruned from that mode's compacted subnetwork (zero gain, so no effect on the "
              f"output, or never fired on its calibration set). Machine-independent (exact counts).")
    return to_png(fig, footer)


def jaccard_figure(modes: dict[str, dict]) -> bytes:
    """Jaccard overlap of the modes' active sets, per hidden layer and over all of them."""
    names = list(modes)
    layers = n_layers(modes)
    panels = [(f"hidden layer {i + 1}", i) for i in range(layers)] + [("all hidden units", None)]
    side = 0.45 * len(names) + 1.6
    fig = new_figure(side * len(panels), side + 1.4)
    for k, (title, layer) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        m = jaccard_matrix(modes, layer)
        ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if k == 0 else [], fontsize=7)
        ax.set_title(title, fontsize=9)
    footer = (f"Jaccard overlap |A ∩ B| / |A ∪ B| of the modes' active unit sets; "
              f"{ACTIVE_DEFINITION}. Read from the bundle manifest (kept_indices).")
    return to_png(fig, footer)
