"""Mode folders keep their promise on hostile files: every problem is a ModeFolderError naming
the file, never a hang (FIFO), an endless read (/dev/zero) or a huge allocation."""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

from taugate.bundle.safe_json import MAX_DEPTH, loads_strict
from taugate.training.sources import FolderModes
from taugate.training.sources.folder import MAX_CLASSES
from taugate.training.sources.reading import FACTS_MAX_DEPTH, ModeFolderError
from tests.test_sources import write_mode

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")


def load_error(root, name="m", timeout=10.0) -> str:
    """The message of the ModeFolderError that loading mode ``name`` raises, within
    ``timeout`` seconds (a FIFO read that blocks is unblocked and fails the test)."""
    outcome: dict = {}

    def target():
        try:
            FolderModes(root).mode(name)
            outcome["ok"] = True
        except BaseException as exc:  # reported below
            outcome["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in root.rglob("*"):  # open the writing end: a blocked reader sees EOF
            if fifo.is_fifo():
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout)
        pytest.fail("loading the mode folder blocked on a file")
    assert "exc" in outcome, "the mode folder loaded"
    exc = outcome["exc"]
    assert isinstance(exc, ModeFolderError), repr(exc)
    return str(exc)


@pytest.mark.parametrize("member", ["train.npz", "test.npz", "calibration.npz", "facts.json"])
def test_fifo_is_refused_without_blocking(tmp_path, member):
    folder = write_mode(tmp_path, "m")
    (folder / member).unlink(missing_ok=True)
    os.mkfifo(folder / member)
    message = load_error(tmp_path)
    assert member in message and "not a regular file" in message and "FIFO" in message


@pytest.mark.parametrize("member", ["test.npz", "facts.json"])
def test_link_to_a_device_is_refused(tmp_path, member):
    folder = write_mode(tmp_path, "m")
    (folder / member).unlink(missing_ok=True)
    (folder / member).symlink_to("/dev/zero")
    message = load_error(tmp_path)
    assert member in message and "character device" in message


def test_links_to_regular_files_are_followed(tmp_path):
    """Documented: a link to a regular file is read wherever it points (datasets shared by
    several modes); only what it points to must be a regular file."""
    write_mode(tmp_path / "elsewhere", "shared", seed=3)
    folder = write_mode(tmp_path / "modes", "m")
    (folder / "test.npz").unlink()
    (folder / "test.npz").symlink_to(tmp_path / "elsewhere" / "shared" / "test.npz")
    (folder / "facts.json").symlink_to(tmp_path / "elsewhere" / "facts.json")
    (tmp_path / "elsewhere" / "facts.json").write_text('{"site": "shared"}')
    mode = FolderModes(tmp_path / "modes").mode("m")
    assert len(mode.test) == 40 and mode.facts["site"] == "shared"


def test_dangling_link_names_the_file(tmp_path):
    folder = write_mode(tmp_path, "m")
    (folder / "calibration.npz").symlink_to(tmp_path / "gone.npz")
    message = load_error(tmp_path)
    assert "calibration.npz" in message and "missing" in message


def _npy(shape, dtype="<f4", data=b"") -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _npz(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _y_npy(n=40) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, np.int64))
    return buf.getvalue()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_header_claiming_terabytes_is_refused_before_allocating(tmp_path, compression):
    folder = write_mode(tmp_path, "m")
    _npz(folder / "train.npz", {"x.npy": _npy((2**38, 4), data=b"\0" * 64), "y.npy": _y_npy()},
         compression)
    message = load_error(tmp_path)
    assert "train.npz" in message and "x" in message and "4398046511104 bytes" in message


def test_zip_directory_claiming_a_huge_member_is_refused(tmp_path):
    """A deflated member whose directory entry claims more than deflate can expand to."""
    folder = write_mode(tmp_path, "m")
    path = folder / "train.npz"
    _npz(path, {"x.npy": _npy((40, 6), data=b"\0" * 960), "y.npy": _y_npy()},
         zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # x.npy's central directory entry
    raw[entry + 24: entry + 28] = (2**32 - 2).to_bytes(4, "little")  # its uncompressed size
    path.write_bytes(bytes(raw))
    message = load_error(tmp_path)
    assert "train.npz" in message and "x" in message


def test_class_ids_are_bounded(tmp_path):
    y = np.zeros(40, np.int64)
    y[7] = 10**9
    write_mode(tmp_path, "m", test={"y": y})
    message = load_error(tmp_path)
    assert "test.npz" in message and "1000000000" in message and str(MAX_CLASSES - 1) in message


def _nested(depth: int):
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


@pytest.mark.parametrize("text, fragment", [
    ('{"accuracy": NaN}', "NaN"),
    ('{"big": 1e400}', "float range"),
    ('{"id": ' + "9" * 200 + "}", "200 characters"),
    ('{"a": 1, "a": 2}', "duplicate key"),
    (json.dumps(_nested(FACTS_MAX_DEPTH + 1)), "nested deeper"),
    ("[1, 2]", "JSON object"),
    ("{", "not valid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
])
def test_facts_json_follows_the_manifest_rules(tmp_path, text, fragment):
    folder = write_mode(tmp_path, "m")
    path = folder / "facts.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = load_error(tmp_path)
    assert "facts.json" in message and fragment in message


def test_accepted_facts_pass_the_runtime_manifest_rules(tmp_path):
    """The deepest facts.json a folder accepts still loads as manifest.modes.<mode>.facts."""
    folder = write_mode(tmp_path, "m")
    (folder / "facts.json").write_text(json.dumps(_nested(FACTS_MAX_DEPTH)))
    facts = FolderModes(tmp_path).mode("m").facts
    manifest = {"modes": {"m": {"facts": facts}}}
    assert loads_strict(json.dumps(manifest)) == manifest
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        loads_strict(json.dumps({"modes": {"m": {"facts": _nested(FACTS_MAX_DEPTH + 1)}}}))
