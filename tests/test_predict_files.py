"""`taugate predict` on hostile files: one error line and exit status 2, never a traceback, a
hang or a huge allocation; `--mnist-style` keeps memory bounded on large photos."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from taugate import cli
from taugate.commands.predict import MAX_IMAGE_PIXELS, load_image

pytest.importorskip("PIL")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {"predict": "taugate.commands.predict"})
    return cli.main


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A 1-bit grayscale PNG; ``rows``: its filtered scanlines (None: a forged file whose
    header claims ``width x height`` and whose data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\0" * 16, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def digit_png(side: int) -> bytes:
    """A real side x side 1-bit PNG: white paper with a black bar (a '1'); compresses to KBs."""
    stride = (side + 7) // 8
    paper = b"\0" + b"\xff" * stride
    bar = bytearray(paper)
    lo, hi = side * 2 // 5 // 8, side * 3 // 5 // 8
    bar[1 + lo: 1 + hi] = b"\0" * (hi - lo)
    top, bottom = side // 5, side * 4 // 5
    return png(side, side, paper * top + bytes(bar) * (bottom - top) + paper * (side - bottom))


def _one_error_line(main, args, capsys) -> str:
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("side, real", [(20000, False), (12000, True)])
def test_huge_png_is_one_line_and_exit_2(main, tiny_bundle, tmp_path, capsys, side, real):
    """A forged 400-megapixel header, and a real 12000x12000 PNG of a few KB (which
    --mnist-style decoded into 2 GB of work arrays): refused from the header."""
    path = tmp_path / "bomb.png"
    path.write_bytes(digit_png(side) if real else png(side, side))
    for extra in ([], ["--mnist-style"]):
        err = _one_error_line(main, ["predict", str(tiny_bundle), "--mode", "rot0", str(path),
                                     *extra], capsys)
        assert "bomb.png" in err and f"{MAX_IMAGE_PIXELS:,}" in err


def test_npy_header_claiming_petabytes_is_one_line_and_exit_2(main, tiny_bundle, tmp_path,
                                                              capsys):
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40, 640)}  # 2.8 PB
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "huge.npy"
    path.write_bytes(buf.getvalue() + b"\0" * 64)
    err = _one_error_line(main, ["predict", str(tiny_bundle), "--mode", "rot0", str(path)],
                          capsys)
    assert "huge.npy" in err and "2,814,749,767,106,560 bytes" in err and "64 bytes" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("name", ["pipe.npy", "pipe.png"])
def test_fifo_is_refused_without_blocking(main, tiny_bundle, tmp_path, capsys, name):
    path = tmp_path / name
    os.mkfifo(path)
    done: dict = {}

    def target():
        done["status"] = main(["predict", str(tiny_bundle), "--mode", "rot0", str(path)])

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # open the writing end so the blocked reader sees EOF, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("predict blocked on a FIFO")
    assert done["status"] == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and name in err and "not a regular file" in err


def test_mnist_style_works_small_on_a_large_real_png(tmp_path):
    """A real 4000x4000 1-bit PNG: the digit is found, and the preparation runs at most at
    mnist_style.WORK_SIDE (the float arrays never see 16 megapixels)."""
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png(4000))
    assert path.stat().st_size < 100_000
    out = load_image(path, mnist_style=True)
    assert out.shape == (28, 28) and out.max() >= 250 and out[0].max() == 0


def test_mnist_style_peak_memory_is_bounded(tmp_path):
    """Peak RSS of preparing a 7000x7000 (49 megapixel) 1-bit PNG: about two bytes per pixel
    for the decoded image, not the ~14 of float work arrays at full size (over 700 MB)."""
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png(7000))
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from taugate.commands.predict import load_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = load_image(Path({str(path)!r}), mnist_style=True)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(before // 1024, after // 1024, out.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    before_mb, after_mb, _ = done.stdout.split(maxsplit=2)
    assert int(after_mb) - int(before_mb) < 250, done.stdout  # MB
    print(done.stdout)
