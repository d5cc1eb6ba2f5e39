"""LaTeX tables (booktabs) from ``summary.json``'s dict: Tables 1-3 of arXiv 2602.11726.

Pure: each function returns the table's text; ``protocol.write_artifacts`` writes them.
"""

from __future__ import annotations

from taugate.bundle.names import rotation_angle
from taugate.lab.experiment.config import ABLATION_METHODS, TABLE1_METHODS

_ESCAPE = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$"}


def latex_escape(text: str) -> str:
    return "".join(_ESCAPE.get(c, c) for c in str(text))


def deg(mode: str) -> str:
    """``"rot45"`` -> ``$45^\\circ$``; any other mode: its (escaped) name."""
    angle = rotation_angle(mode)
    return f"${angle:g}^\\circ$" if angle is not None else latex_escape(mode)


ACC_DIGITS = 4  # the methods differ in the third decimal here (docs/reproduce.md)


def pm(stat: dict | None, digits: int = 3) -> str:
    """``mean $\\pm$ std``, or ``--`` when there is nothing to show."""
    if not stat:
        return "--"
    if stat["n"] < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} $\\pm$ {stat['std']:.{digits}f}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _seeds(summary: dict) -> str:
    seeds = summary["config"]["seeds"]
    return f"{_n(len(seeds), 'seed')} ({', '.join(map(str, seeds))})"


def _table(caption: str, label: str, header: list[str], rows: list[list[str]], align: str) -> str:
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(r) + r" \\" for r in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _method_rows(summary: dict, methods) -> list[list[str]]:
    adapt = summary["adapt_mode"]
    rows = []
    for name in methods:
        entry = summary["methods"].get(name, {}).get(adapt)
        if entry is None:
            continue
        rows.append([latex_escape(entry["label"]), str(entry["trainable_params"]),
                     *(pm(entry["accuracy"][ev], ACC_DIGITS) for ev in summary["eval_modes"]),
                     pm(entry["high_act_frac"], 2)])
    return rows


def _method_table(summary: dict, methods, what: str, label: str) -> str:
    cfg = summary["config"]
    evs = summary["eval_modes"]
    caption = (
        f"{what} A frozen MLP pretrained on {' + '.join(deg(m) for m in cfg['foundation_modes'])} "
        f"MNIST, specialized to {deg(summary['adapt_mode'])} for {_n(cfg['adapt_epochs'], 'epoch')} "
        f"(SGD, lr {cfg['adapt_lr']:g}, momentum {cfg['momentum']:g}, batch {cfg['batch_size']}). "
        f"Test accuracy of the trained model (soft gates) on the "
        f"{', '.join(deg(m) for m in evs)} test sets, mean $\\pm$ sample std over {_seeds(summary)}. "
        f"High-act frac: fraction of soft-gate values $\\sigma(s(z-\\tau)) > {cfg['gate_threshold']:g}$ "
        f"on {cfg['gate_batch']} fixed training examples of the target mode, averaged over the "
        f"hidden layers (gated methods only)."
    )
    header = ["Method", "Trainable params", *(f"Acc ({deg(m)})" for m in evs), "High-act frac"]
    return _table(caption, label, header, _method_rows(summary, methods), "lr" + "c" * (len(evs) + 1))


def results_table(summary: dict) -> str:
    """Table 1: every method beside the frozen baseline."""
    return _method_table(summary, TABLE1_METHODS, "Mode specialization on rotated MNIST.",
                         "tab:mnist-rotation-results")


def ablations_table(summary: dict) -> str:
    """Table 2: TauGate beside its two halves, gain only and threshold only."""
    return _method_table(summary, ("taugate", *ABLATION_METHODS),
                         "Ablations: gain only vs threshold only.", "tab:mnist-rotation-ablations")


def overlap_table(summary: dict) -> str:
    """Table 3: per-layer Jaccard overlap of the two TauGate modes' high-gate unit masks."""
    ov = summary["overlap"]
    if ov is None:
        raise ValueError("overlap table: the summary has no overlap (run with extras)")
    a, b = ov["modes"]
    caption = (
        f"Gate-mask overlap between the {deg(a)}- and the {deg(b)}-specialized TauGate models of "
        f"the same foundation. A hidden unit is in a model's mask when its soft gate "
        f"$\\sigma(s(z-\\tau))$ exceeds {ov['gate_threshold']:g} on at least "
        f"{100 * ov['min_frac']:g}\\% of the examples of a batch. Shared inputs: both models on the "
        f"same {2 * ov['gate_batch']} training examples ({ov['gate_batch']} fixed ones of each "
        f"mode); own inputs: each model on the {ov['gate_batch']} of its own mode. Jaccard "
        f"$|A \\cap B| / |A \\cup B|$ per hidden layer (1 when both masks are empty); Average: "
        f"mean over layers per seed. Mean $\\pm$ sample std over {_seeds(summary)}."
    )
    rows = [[f"Hidden layer {r['layer']}", pm(r["jaccard"]), pm(r["jaccard_own"])]
            for r in ov["layers"]]
    rows.append(["Average", pm(ov["average"]["jaccard"]), pm(ov["average"]["jaccard_own"])])
    return _table(caption, "tab:taugate-overlap",
                  ["Layer", "Jaccard (shared inputs)", "Jaccard (own inputs)"], rows, "lcc")
