"""The bundle readers raise the documented hierarchy, never a crash: hostile safetensors headers
(nesting, huge integers, shapes past int64, duplicate tensor names) and manifest strings that
are not Unicode text (a lone ``\\ud800``)."""

from __future__ import annotations

import json
import shutil

import pytest

from taugate.bundle.manifest import load_manifest, parse_manifest
from taugate.bundle.safe_json import json_depth_error
from taugate.bundle.safetensors import read_safetensors
from taugate.cli import main
from taugate.runtime import BundleFormatError, BundleIntegrityError, ModeRuntime


def _file(header: str, body: bytes = b"") -> bytes:
    text = header.encode()
    return len(text).to_bytes(8, "little") + text + body


def _tensor(shape: str, offsets: str = "[0, 0]", dtype: str = '"F32"') -> str:
    return f'{{"dtype": {dtype}, "shape": {shape}, "data_offsets": {offsets}}}'


SAFETENSORS = [
    ("nested-100k", _file("[" * 100_000 + "]" * 100_000), "nested deeper than 64"),
    ("nested-in-metadata", _file('{"__metadata__": {"k": ' + "[" * 5000 + "]" * 5000 + "}}"),
     "nested deeper than 64"),
    ("4400-digit-int", _file('{"a": ' + _tensor("[" + "1" * 4400 + "]") + "}"),
     "number of 4400 characters"),
    ("4400-digit-offset", _file('{"a": ' + _tensor("[0]", "[0, " + "9" * 4400 + "]") + "}"),
     "number of 4400 characters"),
    ("product-past-int64", _file('{"a": ' + _tensor("[4294967296, 4294967296]") + "}"),
     "too large for an array"),
    ("dim-2^70", _file('{"a": ' + _tensor(f"[{2 ** 70}]") + "}"), "too large for an array"),
    ("dim-2^70-times-0", _file('{"a": ' + _tensor(f"[{2 ** 70}, 0]") + "}"),
     "too large for an array"),
    ("rank-100", _file('{"a": ' + _tensor(json.dumps([1] * 100), "[0, 4]") + "}", bytes(4)),
     "at most 32"),
    ("duplicate-name", _file('{"a": ' + _tensor("[1]", "[0, 4]") + ', "a": '
                             + _tensor("[0]") + "}", bytes(4)), "duplicate key 'a'"),
    ("dtype-a-list", _file('{"a": ' + _tensor("[1]", "[0, 4]", "[]") + "}", bytes(4)),
     "dtype [] not supported"),
    ("metadata-surrogate", _file('{"__metadata__": {"k": "\\ud800"}}'),
     "__metadata__.k: string holds a lone UTF-16 surrogate"),
]


@pytest.mark.parametrize("data,needle", [c[1:] for c in SAFETENSORS],
                         ids=[c[0] for c in SAFETENSORS])
def test_safetensors_refusals(data, needle):
    with pytest.raises(BundleIntegrityError, match="not a valid safetensors file") as info:
        read_safetensors(data, "weights/rot0.safetensors")
    assert needle in str(info.value) and "weights/rot0.safetensors" in str(info.value)


def test_empty_tensors_with_large_dims_still_read():
    got, _ = read_safetensors(_file('{"a": ' + _tensor("[100000, 0]") + "}"))
    assert got["a"].shape == (100000, 0)


@pytest.mark.parametrize("text,error", [
    ("[" * (16 << 20), True),  # unclosed: the parser would still recurse into each
    ("[]" * (8 << 20), False),
    (('{"a": "' + "[" * 100 + '"}'), False),
    ("[" * 65 + "]" * 65, True),
    ("]" + "[" * 65, False),  # the parser stops at the first ']'

])
def test_depth_scan_of_large_documents(text, error):
    assert (json_depth_error(text) is not None) == error


def _bundle(tiny_bundle, tmp_path, edit):
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    text = (root / "manifest.json").read_text("utf-8")
    (root / "manifest.json").write_text(edit(text), "utf-8")
    return root


def _method(text: str) -> str:
    m = json.loads(text)
    m["modes"]["rot0"]["method"] = "MARK"
    return json.dumps(m).replace('"MARK"', '"taugate\\ud800"')


def _mode_name(text: str) -> str:
    return text.replace('"rot45": {', '"rot\\udc0045": {', 1)


def _label(text: str) -> str:
    m = json.loads(text)
    m["output"]["labels"] = [str(i) for i in range(9)] + ["MARK"]
    return json.dumps(m).replace('"MARK"', '"\\udfff"')


SURROGATES = [("mode-method", _method, "modes.rot0.method"),
              ("mode-name", _mode_name, "modes.rot\\udc0045"),
              ("label", _label, "output.labels[9]")]


@pytest.mark.parametrize("edit,field", [c[1:] for c in SURROGATES], ids=[c[0] for c in SURROGATES])
def test_manifest_lone_surrogates_are_refused_naming_the_field(tiny_bundle, tmp_path, edit,
                                                                field):
    root = _bundle(tiny_bundle, tmp_path, edit)
    for load in (load_manifest, ModeRuntime.open):
        with pytest.raises(BundleFormatError, match="lone UTF-16 surrogate") as info:
            load(root)
        assert field in str(info.value)
        str(info.value).encode("utf-8")  # the message itself is printable anywhere


def test_parse_manifest_refuses_lone_surrogates(tiny_bundle):
    raw = json.loads((tiny_bundle / "manifest.json").read_text("utf-8"))
    raw["created_by"] = "x\ud800"
    with pytest.raises(BundleFormatError, match="created_by: string holds a lone"):
        parse_manifest(raw)


def test_lone_surrogate_scan_keeps_pairs_and_survives_depth():
    from taugate.bundle.safe_json import lone_surrogate_error

    assert lone_surrogate_error({"ok": ["\U0001f600", "\ud83d\ude00".encode(
        "utf-16", "surrogatepass").decode("utf-16")]}) is None
    deep: list = []
    node = deep
    for _ in range(50_000):
        node.append([])
        node = node[0]
    node.append("\ud800")
    assert "[0][0]" in lone_surrogate_error(deep)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_info_on_a_surrogate_manifest_is_one_line(tiny_bundle, tmp_path, capsys, as_json):
    root = _bundle(tiny_bundle, tmp_path, _method)
    # info's contract: 1 when the bundle fails verification, with one line on stderr
    assert main(["info", str(root)] + (["--json"] if as_json else [])) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "modes.rot0.method" in lines[0] and "Traceback" not in captured.err
    if as_json:
        assert json.loads(captured.out)["error"] == "BundleFormatError"


def _input_shape(shape: list):
    def edit(text: str) -> str:
        m = json.loads(text)
        m["input"]["shape"] = shape
        m["input"]["layout"] = None
        return json.dumps(m)
    return edit


@pytest.mark.parametrize("shape", [["batch", 10 ** 30], ["batch"] + [2] * 40,
                                   ["batch", 65536, 65536]], ids=["10^30", "rank-40", "2^32"])
def test_manifest_input_shapes_are_bounded(tiny_bundle, tmp_path, shape):
    root = _bundle(tiny_bundle, tmp_path, _input_shape(shape))
    with pytest.raises(BundleFormatError, match="input.shape: expected .* at most 2147483647"):
        ModeRuntime.open(root)
