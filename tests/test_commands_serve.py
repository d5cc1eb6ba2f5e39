"""`taugate serve` argument checks (no server is started here: see test_server*.py)."""

from __future__ import annotations

import pytest

from taugate.cli import main

REFUSED = [
    (["--replicas", "2"], "--replicas: only with --engine ray"),
    (["--max-modes-per-replica", "2", "--replica-cpus", "0.5"],
     "--max-modes-per-replica, --replica-cpus: only with --engine ray"),
    (["--engine", "ray", "--max-sessions", "3"], "use --max-modes-per-replica"),
    (["--engine", "ray", "--replicas", "0"], "replicas: expected an integer >= 1, got 0"),
    (["--engine", "ray", "--max-in-flight", "4", "--body-timeout", "5"],
     "--max-in-flight, --body-timeout: only with --engine fastapi"),
    (["--engine", "ray", "--model-control", "--watch", "5"],
     "--model-control, --watch: only with --engine fastapi"),
    (["--max-in-flight", "0"], "max_in_flight: expected an integer >= 1, got 0"),
    (["--engine", "ray", "--batch-delay-ms", "-2", "--max-queue", "8"],
     "batch delay: expected milliseconds in [0, 10000]"),
    (["--batch-delay-ms", "-1"], "batch delay: expected milliseconds in [0, 10000]"),
    (["--batch-delay-ms", "2", "--max-batch-rows", "0"],
     "max_rows: expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(r[0]) for r in REFUSED])
def test_serve_refuses_flags_of_the_other_engine(tiny_bundle, capsys, args, message):
    if "ray" in args:
        pytest.importorskip("ray.serve")
    assert main(["serve", str(tiny_bundle), *args]) == 2
    assert message in capsys.readouterr().err


def test_engine_choices_are_listed(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "b", "--engine", "triton"])
    assert "choose from 'fastapi', 'ray'" in capsys.readouterr().err
