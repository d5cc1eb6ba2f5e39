"""The ``taugate`` command: parses arguments into config dataclasses and calls one function.

Each subcommand is one module in ``taugate/commands/`` exposing ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import heavy packages (torch, onnx) inside ``run`` only,
so ``taugate --help`` stays fast and works with the runtime-only install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from taugate import __version__

COMMANDS = {
    "train": "taugate.commands.train",
    "export": "taugate.commands.export",
    "info": "taugate.commands.info",
    "predict": "taugate.commands.predict",
    "demo": "taugate.commands.demo",
    "reproduce": "taugate.commands.reproduce",
    "sweep": "taugate.commands.sweep",
    "serve": "taugate.commands.serve",
    "report": "taugate.commands.report",
    "bench": "taugate.commands.bench",
    "peers": "taugate.commands.peers",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taugate",
        description="Mode-specialized conditional compute: train TauGate adapters on a frozen "
        "MLP, export compacted per-mode ONNX subnetworks, serve them with onnxruntime.",
    )
    parser.add_argument("--version", action="version", version=f"taugate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as exc:
        # Errors at the boundary are meant for the user: one clear line, no traceback.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"taugate {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
