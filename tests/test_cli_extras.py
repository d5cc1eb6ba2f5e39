"""A runtime-only install: each command that needs an extra says which, in one line, exit 2.

The missing packages are simulated in a fresh interpreter by a meta-path finder that refuses
them (what Python raises when a package is not installed: ModuleNotFoundError)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from taugate.cli import COMMAND_EXTRAS, build_parser, missing_extra

TRAIN = ["torch", "torchvision", "onnx", "safetensors", "matplotlib", "PIL"]
SERVE = ["fastapi", "uvicorn", "starlette", "pydantic"]


def run_without(blocked: list[str], argv: list[str], cwd) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Missing())
        from taugate.cli import main
        sys.exit(main({argv!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("argv, blocked, extra", [
    (["train", "--out", "run", "--quiet"], TRAIN, "train"),
    (["export", "run", "--out", "bundle"], TRAIN, "train"),
    (["demo", "--out", "demo", "--quiet"], TRAIN, "train"),
    (["reproduce", "--out", "repro"], TRAIN, "train"),
    (["sweep", "--out", "sweep"], TRAIN, "train"),
    (["serve", "bundle"], SERVE, "serve"),
])
def test_missing_extra_is_one_line_exit_2(argv, blocked, extra, tmp_path):
    done = run_without(blocked, argv, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"taugate {argv[0]}: error: this needs the '{extra}' extra")
    assert f"pip install 'taugate[{extra}]'" in lines[0] and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir()), "nothing written"


def test_info_and_predict_need_no_extra(tiny_bundle, tmp_path):
    done = run_without(TRAIN + SERVE, ["info", str(tiny_bundle)], tmp_path)
    assert done.returncode == 0 and "verification  OK" in done.stdout, done.stderr


def test_help_marks_the_commands_that_need_an_extra():
    lines = [ln.split() for ln in build_parser().format_help().splitlines()]
    marks = {ln[0]: ln[1] for ln in lines if len(ln) > 1 and ln[0] in COMMAND_EXTRAS | {
        "info": None, "predict": None}}
    assert marks == {**{c: f"[{e}]" for c, e in COMMAND_EXTRAS.items()},
                     "info": "show", "predict": "classify"}
    assert "pip install 'taugate[EXTRA]'" in " ".join(build_parser().format_help().split())


@pytest.mark.parametrize("command, module, extra", [
    ("report", "matplotlib.figure", "report"),  # report draws only when it has inputs
    ("predict", "PIL", "train"),
    ("serve", "uvicorn", "serve"),
    ("train", "some_torch_internal", "train"),  # unknown module: the command's extra
])
def test_missing_extra_names_the_extra(command, module, extra):
    msg = missing_extra(command, ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert f"'{extra}' extra" in msg and f"pip install 'taugate[{extra}]'" in msg
