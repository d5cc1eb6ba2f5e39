"""`taugate predict BUNDLE --mode M FILE.npz` with token ids and masks (a tiny BERT bundle), and
the bounds .npz files are read with."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("transformers")  # _hf_models builds them with torch

import _hf_models as hfm

from taugate import cli

IDS, MASK, Y = hfm.tokens(4, seed=8)


def _run(args, capsys) -> tuple[int, str, str]:
    code = cli.main(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_npz_of_ids_and_masks_matches_the_runtime(bert_bundle, tmp_path, capsys):
    from taugate.runtime import ModeRuntime

    path = tmp_path / "test.npz"
    np.savez(path, input_ids=IDS, attention_mask=MASK, y=Y)  # a mode folder's file: y ignored
    code, out, err = _run([str(bert_bundle), "--mode", "low", str(path), "--json"], capsys)
    assert code == 0, err
    logits = [p["logits"] for p in json.loads(out)["predictions"]]
    expected = ModeRuntime.open(bert_bundle).run("low", {"input_ids": IDS,
                                                         "attention_mask": MASK})
    np.testing.assert_allclose(logits, expected, rtol=1e-6)
    np.savez(path, input_ids=IDS)  # no mask: all ones
    code, out, _ = _run([str(bert_bundle), "--mode", "dense", str(path)], capsys)
    assert code == 0 and len(out.split()) == len(IDS)


@pytest.mark.parametrize("arrays, needle", [
    ({"ids": IDS}, r"holds 'ids'; expected the arrays 'input_ids' and optionally"),
    ({"input_ids": IDS + hfm.VOCAB}, r"ids must lie in \[0, 40\)"),
    ({"input_ids": IDS, "attention_mask": MASK * 2}, "mask must be 0 or 1"),
    ({"input_ids": IDS.astype(np.float32)}, "must be integers"),
    ({"input_ids": np.array([None] * 3, dtype=object)}, "pickle"),
])
def test_bad_npz_is_one_error_line_naming_the_problem(bert_bundle, tmp_path, capsys, arrays,
                                                      needle):
    import re

    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, out, err = _run([str(bert_bundle), "--mode", "low", str(path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert re.search(needle, err) and "bad.npz" in err, err


def test_forged_npz_header_is_refused_before_allocating(tiny_bundle, tmp_path, capsys):
    """A member whose .npy header claims a 10**12-element array: refused from the header; a
    plain bundle reads its samples from 'x'."""
    from numpy.lib import format as npy_format

    header = {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)}
    import io

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    code, _, err = _run([str(tiny_bundle), "--mode", "rot0", str(path)], capsys)
    assert code == 2 and "header claims" in err and "forged.npz" in err, err
    good = tmp_path / "x.npz"
    np.savez(good, x=np.zeros((2, 784), np.float32))
    code, out, err = _run([str(tiny_bundle), "--mode", "rot0", str(good)], capsys)
    assert code == 0 and len(out.split()) == 2, err
