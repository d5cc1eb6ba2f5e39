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

#: The retune clips the gradient norm at this value. Why: the retune runs at 10x the adaptation
#: lr and the gains keep their 16x lr boost, so a gain moves 8x its gradient per step. On a mode
#: the foundation was pretrained on, gradient norms stay below ~6 and the clip never acts (the
#: demo's numbers are bit-identical); on a mode it never saw (rot-30, rot90 from the demo
#: foundation) the first retune gradients are 5-50 and the gains overshoot, the loss feeds back
#: and diverges (to ~1e7). Clipped, those modes end at 0.853 / 0.790 (frozen 0.665 / 0.413).
RETUNE_MAX_GRAD_NORM = 10.0
