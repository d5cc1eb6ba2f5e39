"""Figure 1 of the reproduction: the report's one implementation (report/figures.py), drawn
from ``summary.json``'s dict in each requested format."""

from __future__ import annotations


def accuracy_figure(summary: dict, formats: tuple[str, ...] = ("pdf", "png")) -> dict[str, bytes]:
    """``{format: bytes}`` of the grouped bar chart; error bars are the std over seeds."""
    from taugate.lab.report.figures import method_accuracy_figure
    from taugate.lab.report.render_results import entries_from_summary

    entries, adapt, evs, seeds, device = entries_from_summary(summary)
    return {fmt: method_accuracy_figure(entries, adapt, evs, seeds, device, fmt) for fmt in formats}
