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


def test_stream_timeout_is_only_for_language_models(tiny_bundle, capsys):
    assert main(["serve", str(tiny_bundle), "--stream-timeout", "5"]) == 2
    assert "--stream-timeout: only for language-model bundles" in capsys.readouterr().err


def test_precision_reaches_the_runtime_and_ray_refuses_it(tiny_bundle, capsys, monkeypatch):
    import taugate.server

    served = {}
    monkeypatch.setattr(taugate.server, "serve", lambda rt, **kw: served.update(rt=rt))
    assert main(["serve", str(tiny_bundle), "--precision", "fp32", "--memory-budget",
                 "none"]) == 0
    assert served["rt"].precision == "fp32"
    # a bundle without int8 graphs: ModeRuntime.open's own refusal, not a silent fp32 server
    assert main(["serve", str(tiny_bundle), "--precision", "int8"]) == 2
    assert "int8" in capsys.readouterr().err
    pytest.importorskip("ray.serve")
    assert main(["serve", str(tiny_bundle), "--engine", "ray", "--precision", "int8"]) == 2
    assert "--precision int8: only with --engine fastapi" in capsys.readouterr().err
