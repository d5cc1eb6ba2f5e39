"""Regenerate the README's demo table from a real run (`make readme-demo`).

Runs `taugate demo`, then replaces the text between the ``<!-- readme-demo:start -->`` and
``<!-- readme-demo:end -->`` markers of README.md with its output and the facts that make it
comparable: CPU, cores, load average before and after, wall time, torch and onnxruntime
versions. The table is never edited by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

START, END = "<!-- readme-demo:start -->", "<!-- readme-demo:end -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def render(output: str, seconds: float, load_before: str, load_after: str) -> str:
    import onnxruntime
    import torch

    table = output.strip().split("\n\n", 1)[-1].strip()  # drop the "data: ..." line
    return (f"{START}\n```\n{table}\n```\n\n"
            f"Written by `make readme-demo` from one run of `taugate demo`: {cpu_name()}, "
            f"{os.cpu_count()} CPUs, load average {load_before} before and {load_after} after "
            f"(1, 5, 15 min), {seconds:.0f} s wall time, torch {torch.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, Python {platform.python_version()}.\n{END}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="the demo's output directory")
    p.add_argument("--readme", default="README.md")
    args = p.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text("utf-8")
    if START not in text or END not in text:
        sys.exit(f"{readme}: no {START} ... {END} markers")
    before, t0 = load(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "taugate.cli", "demo", "--out", args.out,
                           "--quiet"], capture_output=True, text=True, check=False)
    seconds, after = time.perf_counter() - t0, load()
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return done.returncode
    block = render(done.stdout, seconds, before, after)
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: block, text), "utf-8")
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
