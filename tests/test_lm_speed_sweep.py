"""The decode-speed sweep against the kept FFN fraction (taugate/lab/lm_speed_sweep.py), at toy
size: exact kept counts, every cell measured, the figure written."""

import pytest
from lm_fixtures import CFG, foundation

from taugate.exporting.lm_bundle import write_lm_bundle
from taugate.lab.lm_speed_sweep import kept_modes, measure, mode_name, plot


def test_kept_modes_keep_exactly_the_fraction_of_units(tmp_path):
    model = foundation()
    modes = kept_modes(model, (1.0, 0.25))
    assert sorted(modes) == [mode_name(0.25), mode_name(1.0)] == ["kept0p25", "kept1p00"]
    bundle = write_lm_bundle(model, modes, tmp_path / "b", precisions=("fp32",))
    import json

    m = json.loads((bundle / "manifest.json").read_text())["modes"]
    assert m["kept0p25"]["units_kept"] == [CFG.ffn // 4] * CFG.layers
    assert m["kept1p00"]["units_kept"] == [CFG.ffn] * CFG.layers
    assert m["kept0p25"]["ffn_mac_ratio"] == pytest.approx(4.0)


@pytest.mark.parametrize("bad", [(), (0.0,), (1.5,), (True,)])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ValueError, match="fractions: expected numbers in"):
        kept_modes(foundation(), bad)


def test_measure_fills_every_cell_and_plots(tmp_path):
    model = foundation()
    bundle = write_lm_bundle(model, kept_modes(model, (0.5,)), tmp_path / "b",
                             precisions=("fp32", "int8"))
    r = measure(bundle, batches=(1, 2), rounds=1, new_tokens=3, prompt="abc")
    assert sorted(r["speed"]) == ["batch1", "batch2"]
    for batch in r["speed"].values():
        assert batch["load_before"] is None or len(batch["load_before"]) == 3
        for m in ("dense", "kept0p50"):
            for p in ("fp32", "int8"):
                cell = batch["models"][m][p]
                assert cell["tokens_per_s"] > 0 and cell["ttft_s"] > 0
    assert r["speedup"]["batch1"]["dense"]["int8"]["tokens_per_s"] == 1.0
    assert r["facts"]["kept0p50"]["units_kept"] == [CFG.ffn // 2] * CFG.layers
    mem = r["memory"]["kept0p50"]["int8"]
    assert mem["rss_delta_bytes"] is None or mem["rss_delta_bytes"] > 0
    assert 0 < mem["graph_bytes"] < r["memory"]["dense"]["fp32"]["graph_bytes"]
    path = plot(r, tmp_path / "fig" / "lm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_step_fit_recovers_a_fixed_cost_and_a_slope():
    from taugate.lab.lm_speed_sweep import step_fit

    facts = {"dense": {"ffn_macs": 4e6}, "a": {"ffn_macs": 1e6}, "b": {"ffn_macs": 2e6}}
    # step = 100 us + 50 us per million FFN MACs, batch 2: tokens/s = 2e6 / step_us
    models = {m: {"int8": {"tokens_per_s_median_step": 2e6 / (100 + 50 * f["ffn_macs"] / 1e6)}}
              for m, f in facts.items()}
    fit = step_fit(facts, {"batch2": {"batch": 2, "models": models}})
    assert fit["batch2"]["int8"] == {"fixed_us": pytest.approx(100, abs=0.1),
                                     "us_per_mffn_mac": pytest.approx(50, abs=0.01)}
