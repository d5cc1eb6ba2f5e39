"""export/prune.py + export/specialize.py: tolerance, rounding, exactness and the accuracy guard."""

from __future__ import annotations

import numpy as np
import pytest

from taugate.exporting.prune import PruneConfig, compact, firing_rates, keep_masks
from taugate.exporting.specialize import PruningGuardError, prune_mode
from taugate.exporting.synthetic import random_hardened
from taugate.spec import HardenedLayer, HardenedModel


def sparse_model(seed: int = 0) -> HardenedModel:
    """A random model where a third of layer 0's units never fire (very negative bias) and two
    layer-1 units have zero gain (all-zero outgoing column)."""
    m = random_hardened(seed, widths=(30, 12), n_in=40)
    l0, l1, l2 = m.layers
    b0 = l0.bias.copy()
    b0[::3] = -100.0
    w2 = l2.weight.copy()
    w2[:, [2, 5]] = 0.0
    return HardenedModel((HardenedLayer(l0.weight, b0, l0.threshold), l1,
                          HardenedLayer(w2, l2.bias)))


def data(model: HardenedModel, n: int, seed: int):
    """Inputs and labels = the model's own predictions (unpruned accuracy 1.0)."""
    x = np.random.default_rng(seed).random((n, model.layers[0].in_features), dtype=np.float32)
    return x, model.forward(x).argmax(1)


def test_tolerance_zero_is_exact_on_calibration():
    model = sparse_model()
    cal, test = data(model, 2000, 1), data(model, 500, 2)
    pruned = prune_mode(model, cal, test, PruneConfig(below=0.0))
    assert pruned.model.widths[0] <= 20 and pruned.model.widths[1] <= 10
    full, cut = model.forward(cal[0]), pruned.model.forward(cal[0])
    assert np.array_equal(full.argmax(1), cut.argmax(1))
    assert np.abs(full - cut).max() <= 1e-5
    assert pruned.calibration_accuracy == 1.0 and pruned.accuracy_drop == 0.0


def test_zero_gain_units_are_removed():
    model = sparse_model()
    masks = keep_masks(model, firing_rates(model, data(model, 500, 3)[0]))
    assert not masks[1][2] and not masks[1][5]


def test_guard_refuses_lossy_pruning():
    model = sparse_model()
    with pytest.raises(PruningGuardError) as err:
        prune_mode(model, data(model, 2000, 1), data(model, 1000, 2), PruneConfig(below=0.5))
    msg = str(err.value)
    assert "1.0000 unpruned" in msg and "max_accuracy_drop=0.005" in msg and "drop of" in msg
    assert isinstance(err.value, ValueError) and err.value.pruned < err.value.unpruned


def test_guard_limit_is_configurable_and_can_use_another_split():
    model = sparse_model()
    pruned = prune_mode(model, data(model, 2000, 1), data(model, 500, 2),
                        PruneConfig(below=0.5, max_accuracy_drop=1.0),
                        guard=data(model, 500, 4), guard_name="validation")
    assert pruned.guard_split == "validation" and pruned.accuracy_drop > 0.005


@pytest.mark.parametrize("multiple", [1, 4, 8, 64])
def test_round_to_keeps_a_multiple_and_the_most_active(multiple):
    model = sparse_model()
    x = data(model, 1000, 5)[0]
    rates = firing_rates(model, x)
    base = keep_masks(model, rates)
    masks = keep_masks(model, rates, PruneConfig(round_to=multiple))
    for i, (b, m, r) in enumerate(zip(base, masks, rates)):
        assert m.sum() == min(-(-b.sum() // multiple) * multiple, model.widths[i])
        assert np.all(m[b])  # every unit kept before is still kept
        added = m & ~b
        if added.any() and (~m).any():
            # added back first: units with a non-zero outgoing column, then the most active
            score = 2.0 * np.any(model.layers[i + 1].weight != 0, axis=0) + r
            assert score[added].min() >= score[~m].max()
    np.testing.assert_allclose(compact(model, masks).forward(x), model.forward(x), atol=1e-5)


@pytest.mark.parametrize("kwargs, field", [({"below": 1.0}, "below"), ({"round_to": 0}, "round_to"),
                                           ({"round_to": 2.5}, "round_to"),
                                           ({"max_accuracy_drop": -0.1}, "max_accuracy_drop")])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PruneConfig(**kwargs)
