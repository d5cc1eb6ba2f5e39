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
