"""taugate/timing.py: the order in which ``Interleaved`` calls its callables each round."""

from __future__ import annotations

from taugate.timing import Interleaved


def _orders(timer: Interleaved, rounds: int) -> list[list[str]]:
    seen: list[str] = []
    for name in timer.calls:
        timer.calls[name] = (lambda name=name: seen.append(name))
    out = []
    for _ in range(rounds):
        timer.round()
        out.append(seen[:])
        seen.clear()
    return out


def test_rotated_by_default():
    orders = _orders(Interleaved(dict.fromkeys("abc", None)), 4)
    assert orders == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_shuffled_rounds_call_each_once_in_a_seeded_order():
    orders = _orders(Interleaved(dict.fromkeys("abcde", None), shuffle=3), 40)
    assert all(sorted(o) == list("abcde") for o in orders)
    # not always the same neighbour: each callable follows several others over the rounds
    before = {(o[i - 1], o[i]) for o in orders for i in range(1, 5)}
    assert all(len({a for a, b in before if b == n}) >= 3 for n in "abcde")
    assert orders == _orders(Interleaved(dict.fromkeys("abcde", None), shuffle=3), 40)
    timer = Interleaved(dict.fromkeys("ab", None), shuffle=0)
    _orders(timer, 5)
    assert {k: len(v) for k, v in timer.samples.items()} == {"a": 5, "b": 5}
