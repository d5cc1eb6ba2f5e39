"""taugate: mode-specialized conditional compute (TauGate, arXiv 2602.11726).

``taugate.train(modes, out, model=...)`` trains one adapter per mode on a frozen model;
``taugate.export(run, out)`` writes the bundle; ``taugate.runtime.ModeRuntime`` serves it
(docs/python-api.md). Importing this module imports nothing heavy: the two functions load
torch when called.
"""

__version__ = "0.1.0"


def train(modes, out="run", **options):
    """Train one adapter per mode on a frozen model; see :func:`taugate.api.train`."""
    from taugate.api import train as _train

    return _train(modes, out, **options)


def export(run, out=None, **options):
    """Export a run to a bundle; see :func:`taugate.api.export`."""
    from taugate.api import export as _export

    return _export(run, out, **options)


__all__ = ["__version__", "export", "train"]
