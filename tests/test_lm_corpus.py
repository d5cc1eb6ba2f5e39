"""The corpus: two domains from text that ships with Python, split deterministically."""

import numpy as np
import pytest

from taugate.training.lm.corpus import fingerprint, held_out, load_corpus, load_domain, python_tag

NAMES = [f"m{i:02d}.py" for i in range(12)] + ["pkg/b.py", "pkg/c.py"]


def _stdlib(tmp_path):
    root = tmp_path / "lib"
    for rel in (*NAMES, "test/t.py", "pkg/tests/u.py", "site-packages/x.py"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n" + "x = 1\n" * 50)
    return root


def test_code_is_sorted_sources_without_tests_nor_installed_packages(tmp_path):
    root = _stdlib(tmp_path)
    d = load_domain("code", cap=10**6, root=root)
    text = (d.train.tobytes() + d.held_out.tobytes()).decode()
    assert "# test/t.py" not in text and "# pkg/tests/u.py" not in text
    assert "site-packages" not in text
    assert d.documents == 14
    assert d.train.dtype == np.uint8 and d.held_out.size > 0
    # the split is by name, so it is the same whatever the cap and run
    again = load_domain("code", cap=10**6, root=root)
    assert np.array_equal(d.train, again.train) and np.array_equal(d.held_out, again.held_out)
    held = [n for n in NAMES if held_out(n)]
    assert held == ["m03.py", "m06.py", "m08.py"]
    assert all(f"# {n}".encode() in d.held_out.tobytes() for n in held)
    assert f"# {NAMES[0]}".encode() in d.train.tobytes()


def test_cap_bounds_the_bytes_read(tmp_path):
    d = load_domain("code", cap=1200, root=_stdlib(tmp_path))
    assert d.train.size + d.held_out.size < 1200 + 4096 + 16
    assert d.documents < 14


def test_real_domains_and_the_python_that_made_them():
    corpus = load_corpus({"code": 50_000, "prose": 30_000})
    assert set(corpus) == {"code", "prose"}
    assert b"def " in corpus["code"].train.tobytes()
    assert corpus["prose"].held_out.size > 0
    assert corpus["code"].summary()["train_sha256"] == fingerprint(corpus["code"].train)
    assert python_tag().split()[1].count(".") == 2


def test_bad_names_and_caps_are_refused():
    with pytest.raises(ValueError, match="expected one of code, prose"):
        load_domain("poetry")
    with pytest.raises(ValueError, match="unknown domain"):
        load_corpus({"poetry": 10})
    with pytest.raises(ValueError, match="positive number of bytes"):
        load_domain("prose", cap=0)
