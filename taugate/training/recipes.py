"""Named training recipes (plain dicts, no torch import: the CLI reads them at parse time)."""

#: The recipe that measured best on the paper backbone (docs/speedup.md): 1.91x fewer MACs at
#: 0.9646 rot45 test accuracy (dense frozen 0.9635). Wider backbones want a smaller unit_l1
#: (about x 128 / width; `taugate sweep --reference-width`). Used by `taugate demo` and the
#: benchmarks' bundle; plain TauGateConfig defaults stay the paper's.
SPARSE_RECIPE = {
    "unit_l1": 0.08,
    "gain_lr_scale": 16.0,
    "retune_epochs": 4,
    "retune_lr_scale": 10.0,
    "retune_schedule": "cosine",
}

#: The hidden width SPARSE_RECIPE's unit_l1 was measured at.
REFERENCE_WIDTH = 128


def sparse_recipe(hidden) -> dict:
    """SPARSE_RECIPE for a backbone with these hidden widths: ``unit_l1 x 128 / mean width``.

    Why: with the gains' hot lr, the proximal step zeroes a unit once its gain falls below
    lr x lambda x cost, and a wider layer spreads the same signal over more, smaller gains, so
    a fixed lambda zeroes every unit of a 1024-wide backbone (accuracy 0.097). The sweep
    (`taugate sweep --reference-width 128`) scales lambda the same way; at width 1024 that is
    0.01, where it measured 4.7-6.9x fewer MACs at or above the dense accuracy."""
    widths = [int(w) for w in hidden]
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden: expected one or more positive widths, got {hidden!r}")
    mean = sum(widths) / len(widths)
    return {**SPARSE_RECIPE, "unit_l1": SPARSE_RECIPE["unit_l1"] * REFERENCE_WIDTH / mean}

#: The retune clips the gradient norm at this value. Why: the retune runs at 10x the adaptation
#: lr and the gains keep their 16x lr boost, so a gain moves 8x its gradient per step. On a mode
#: the foundation was pretrained on, gradient norms stay below ~6 and the clip never acts (the
#: demo's numbers are bit-identical); on a mode it never saw (rot-30, rot90 from the demo
#: foundation) the first retune gradients are 5-50 and the gains overshoot, the loss feeds back
#: and diverges (to ~1e7). Clipped, those modes end at 0.853 / 0.790 (frozen 0.665 / 0.413).
RETUNE_MAX_GRAD_NORM = 10.0
