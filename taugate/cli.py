"""The ``taugate`` command: parses arguments into config dataclasses and calls one function.

Each subcommand is one module in ``taugate/commands/`` exposing ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import heavy packages (torch, onnx) inside ``run`` only,
so ``taugate --help`` stays fast and works with the runtime-only install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from taugate import __version__

COMMANDS = {
    "train": "taugate.commands.train",
    "export": "taugate.commands.export",
    "extract": "taugate.commands.extract",
    "info": "taugate.commands.info",
    "predict": "taugate.commands.predict",
    "route": "taugate.commands.route",
    "demo": "taugate.commands.demo",
    "reproduce": "taugate.commands.reproduce",
    "sweep": "taugate.commands.sweep",
    "serve": "taugate.commands.serve",
    "report": "taugate.commands.report",
    "bench": "taugate.commands.bench",
    "peers": "taugate.commands.peers",
    "lm": "taugate.commands.lm",
    "lm-router": "taugate.commands.lm_router",
}

#: The install extra each command needs beyond the runtime (numpy + onnxruntime).
COMMAND_EXTRAS = {"train": "train", "export": "train", "extract": "train", "route": "train", "demo": "train",
                  "reproduce": "train", "sweep": "train", "lm": "train", "serve": "serve", "report": "report"}

#: Top-level module -> the extra that installs it (what a missing import means to the user).
MODULE_EXTRAS = {"torch": "train", "torchvision": "train", "onnx": "train", "safetensors": "train",
                 "matplotlib": "report", "fastapi": "serve", "uvicorn": "serve",
                 "pydantic": "serve", "starlette": "serve", "PIL": "train"}

EPILOG = ("The runtime install (numpy + onnxruntime) runs info and predict; a command marked "
          "[EXTRA] needs pip install 'taugate[EXTRA]' (from a checkout: pip install "
          "'.[EXTRA]').")


def missing_extra(command: str, exc: ImportError) -> str:
    """The one line a user sees when ``command`` needs a package that is not installed."""
    module = (exc.name or "").split(".")[0]
    extra = MODULE_EXTRAS.get(module) or COMMAND_EXTRAS.get(command)
    if extra is None:
        return f"missing module {exc.name or exc}: reinstall taugate ({exc})"
    return (f"this needs the '{extra}' extra (no module named {module or exc.name!r}): "
            f"pip install 'taugate[{extra}]', or from a checkout: pip install '.[{extra}]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taugate",
        description="Mode-specialized conditional compute: adapt a frozen model (the paper's "
        "MLP, a small ViT, or your own PyTorch model with --model) to each input mode by "
        "learning per-unit thresholds and gains (TauGate), export every mode as a compacted "
        "ONNX subnetwork beside the dense model in one bundle (shared or standalone, fp32 or "
        "int8), and serve, predict and benchmark the bundle with onnxruntime alone.",
    )
    parser.add_argument("--version", action="version", version=f"taugate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        extra = COMMAND_EXTRAS.get(name)
        help_ = f"[{extra}] {module.HELP}" if extra else module.HELP
        p = sub.add_parser(name, help=help_, description=module.__doc__,
                           epilog=f"needs: pip install 'taugate[{extra}]'" if extra else None)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `predict BUNDLE --mode M FILE...`: argparse gives an optional positional list ("*",
        # empty with --prompt) only the words before the first option; the rest land here
        if args.command == "predict" and not any(e.startswith("-") for e in extra):
            args.files += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except BrokenPipeError:
        # `taugate predict ... | head`: the reader left; end quietly like any Unix tool
        # (the Python docs' recipe: point stdout at devnull so the exit flush cannot fail)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a process ended by SIGPIPE
    except ImportError as exc:
        print(f"taugate {args.command}: error: {missing_extra(args.command, exc)}",
              file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as exc:
        # Errors at the boundary are meant for the user: one clear line, no traceback.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"taugate {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
