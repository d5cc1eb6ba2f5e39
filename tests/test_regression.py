"""export/regression.py: a mode worse than the dense frozen model is refused, or warned about."""

from __future__ import annotations

import pytest

from taugate.exporting.regression import DenseComparison, WorseThanDenseError, check_not_worse

C = DenseComparison


@pytest.mark.parametrize("comparisons, max_drop, refused", [
    ([C("rot0", 0.9628, 0.9652)], 0.005, []),  # the demo's rot0: 0.0024 below, allowed
    ([C("rot45", 0.9646, 0.9635)], 0.0, []),  # better than dense
    ([C("rot45", 0.9635, 0.9635)], 0.0, []),  # equal never trips
    ([C("rot-30", 0.583, 0.660)], 0.005, ["rot-30"]),
    ([C("w1024", 0.097, 0.972), C("rot0", 0.97, 0.97)], 0.005, ["w1024"]),
    ([C("a", 0.90, 0.95), C("b", 0.80, 0.95)], 0.1, ["b"]),
])
def test_check_not_worse_table(comparisons, max_drop, refused):
    if not refused:
        assert check_not_worse(comparisons, max_drop) == []
        return
    with pytest.raises(WorseThanDenseError) as err:
        check_not_worse(comparisons, max_drop)
    msg = str(err.value)
    for c in comparisons:
        assert (f"mode {c.mode}:" in msg) == (c.mode in refused)
    assert "--max-accuracy-drop" in msg and "--allow-worse" in msg
    warnings = check_not_worse(comparisons, max_drop, allow_worse=True)
    assert len(warnings) == len(refused) and all("--allow-worse" in w for w in warnings)


def test_message_names_both_accuracies():
    msg = C("rot-30", 0.583, 0.660).message(0.005)
    assert "0.5830" in msg and "0.6600" in msg and "0.0770" in msg


def test_negative_drop_is_refused():
    with pytest.raises(ValueError, match="max_drop"):
        check_not_worse([], -0.1)
