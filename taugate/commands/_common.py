"""Argument groups and helpers shared by the training commands (train, export, demo)."""

from __future__ import annotations

import argparse


def csv_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def at_least(low: float, kind=int, strict: bool = False):
    """An argparse type: a ``kind`` number ``>= low`` (``> low`` when ``strict``), so a bad
    value is refused in the flag's own name (argparse prefixes ``argument --flag:``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a{'n integer' if kind is int else ' number'}"
                                             f", got {text!r}") from None
        if value < low or (strict and value == low) or value != value:
            raise argparse.ArgumentTypeError(f"expected {'>' if strict else '>='} {low:g}, got "
                                             f"{text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def positive_int_list(text: str) -> list[int]:
    values = int_list(text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def flag_named(names: dict[str, str]):
    """A context that rewrites a config error ``"key: ..."`` as ``"--flag: ..."`` for the keys
    in ``names`` (CLI errors speak in flags, not in Python field names)."""
    import contextlib

    @contextlib.contextmanager
    def rewrite():
        try:
            yield
        except ValueError as exc:
            msg = str(exc)
            key = msg.split(":", 1)[0]
            if key in names:
                raise ValueError(names[key] + msg[len(key):]) from exc
            raise
    return rewrite()


def float_list(text: str) -> list[float]:
    try:
        return [float(s) for s in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None,
                   help="MNIST root holding MNIST/raw/ (default: $TAUGATE_DATA, else a user "
                        "cache directory, downloaded on first use)")
    g.add_argument("--calibration-size", type=int, default=5000,
                   help="training examples held out for calibration (default 5000)")
    g.add_argument("--limit-train", type=int, default=None, help="use only N training examples")
    g.add_argument("--limit-test", type=int, default=None, help="use only N test examples")
    g.add_argument("--no-download", action="store_true",
                   help="never download MNIST; fail if the files are not under the data root")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "directml"],
                   help="training device; auto prefers DirectML, then CUDA, then CPU")


def data_config(args):
    from taugate.training.sources.mnist import DataConfig

    if args.limit_train is not None and args.limit_train <= args.calibration_size:
        raise ValueError(
            f"--limit-train {args.limit_train} leaves no training data once --calibration-size "
            f"{args.calibration_size} examples are held out for calibration; pass a smaller "
            f"--calibration-size (e.g. --calibration-size {max(1, args.limit_train // 5)}) or a "
            f"larger --limit-train")
    return DataConfig(root=args.data_root, calibration_size=args.calibration_size,
                      limit_train=args.limit_train, limit_test=args.limit_test,
                      download=not args.no_download)


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain aligned text table (numbers formatted by the caller)."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def fewer_macs(ratio: float | None) -> str:
    """``dense MACs / mode MACs`` as the tables print it: ``"1.94x fewer"`` ("-" when unknown)."""
    return "-" if ratio is None else f"{ratio:.2f}x fewer"


def mac_ratio_text(dense_macs, macs) -> str:
    """``"1.94x fewer"``: how many times fewer MACs than the dense model (one wording for the
    demo, export and info)."""
    return fewer_macs(dense_macs / macs if dense_macs and macs else None)


def facts_text(facts: dict | None) -> str:
    """A mode's free-form facts on one line: ``angle=45 source=mnist-rotation``."""
    if not facts:
        return "-"
    return " ".join(f"{k}={format(v, 'g') if isinstance(v, float) else v}"
                    for k, v in facts.items())
