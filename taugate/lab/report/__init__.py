"""The benchmark report: benchmark JSON + bundle + reproduce and sweep outputs -> README.md + PNGs.

``collect`` reads the inputs, ``units`` computes which units each mode uses, ``figures`` and
``figures_units`` draw (matplotlib, Agg), ``render`` and ``render_results`` write markdown,
``build`` puts it on disk. ``taugate report`` calls :func:`build_report`.
"""

from __future__ import annotations

from taugate.lab.report.build import Report, ReportConfig, build_report

__all__ = ["Report", "ReportConfig", "build_report"]
