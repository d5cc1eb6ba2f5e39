"""Train a foundation on a mixture of modes and/or one adapter per mode on the frozen foundation.

Writes RUN/run.json, RUN/foundation.{safetensors,json} and RUN/adapters/<mode>.{safetensors,json}.
The defaults are the paper's protocol (arXiv 2602.11726): MLP 784-128-128-10, SGD momentum 0.9,
batch 256, 2 foundation epochs, 1 adaptation epoch, learning rate 0.05 (see docs/reproduce.md). Bring your
own modes (--modes-dir MODES: MODES/<mode>/{train,test[,calibration]}.npz), your own frozen model
(--model FILE.py:FACTORY [--weights W.safetensors]), and pick the gated layers (--targets).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from taugate.commands._common import (
    add_data_arguments,
    add_device_argument,
    at_least,
    csv_list,
    data_config,
    flag_named,
    format_table,
    mac_ratio_text,
    positive_int_list,
)
from taugate.training.budget import ADAPT_MIN_STEPS
from taugate.training.recipes import REFERENCE_WIDTH, SPARSE_RECIPE, sparse_recipe

HELP = "train a foundation and/or TauGate adapters (one per mode)"


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptation")
    g.add_argument("--method", default="taugate",
                   help="adaptation method (taugate, frozen, bitfit, lora, full_ft, gain_only, "
                        "tau_only; default taugate)")
    g.add_argument("--adapt-epochs", type=at_least(1), default=1,
                   help="adaptation epochs (default 1, the paper's), more where needed to reach "
                        "--adapt-min-steps")
    g.add_argument("--adapt-min-steps", type=at_least(0), default=ADAPT_MIN_STEPS, metavar="N",
                   help=f"at least N optimizer steps per mode: a small mode gets more epochs "
                        f"(default {ADAPT_MIN_STEPS}: 500 rows at batch 256 train 100 epochs; "
                        f"MNIST's 55,000 keep one); 0 = exactly --adapt-epochs")
    g.add_argument("--adapt-lr", type=at_least(0, float, strict=True), default=0.05, help="adaptation SGD lr (default 0.05)")
    g.add_argument("--sharpness", type=at_least(0, float, strict=True), default=None, help="TauGate gate sharpness s (Eq. 3)")
    g.add_argument("--activity-lambda", type=at_least(0, float), default=None,
                   help="TauGate lambda on mean gate activity (Eq. 5)")
    g.add_argument("--sparse", action="store_true",
                   help="unit-level sparsity with the measured recipe "
                        + " ".join(f"{k}={v}" for k, v in SPARSE_RECIPE.items())
                        + f" (taugate, gain_only; unit_l1 is for width {REFERENCE_WIDTH} and "
                        "scales with 128 / the mean hidden width): whole units switch off per "
                        "mode, so the exported subnetworks are smaller; the flags below "
                        "override it")
    g.add_argument("--unit-l1", type=at_least(0, float), default=None, metavar="LAMBDA",
                   help="cost-weighted proximal L1 on the gains, which zeroes whole units "
                        "(default 0 = the paper)")
    g.add_argument("--gain-lr-scale", type=at_least(0, float, strict=True), default=None,
                   help="the gains' learning rate = adapt lr x this (default 1)")
    g.add_argument("--retune-epochs", type=at_least(0), default=None,
                   help="after the sparse phase, retrain the kept units without L1 (default 0)")
    g.add_argument("--retune-lr-scale", type=at_least(0, float, strict=True), default=None,
                   help="retune lr = adapt lr x this (default 1)")
    g.add_argument("--retune-schedule", choices=("constant", "cosine"), default=None,
                   help="retune lr schedule (default constant)")
    g.add_argument("--target-mac-ratio", type=at_least(0, float), default=None, metavar="R",
                   help="with --retune-epochs: before the retune, remove the least important "
                        "units until the mode needs R times fewer MACs than the dense model "
                        "(default 0 = keep what --unit-l1 left)")
    g.add_argument("--correction-rank", type=at_least(0), default=None, metavar="R",
                   help="taugate: add a per-mode rank-R correction to the first layer, trained "
                        "with tau/gamma and merged into the mode's weights (no extra MACs; "
                        "R x (inputs + kept units) numbers per mode; default 0 = off)")
    g.add_argument("--correction-pool", type=at_least(1), default=None, metavar="K",
                   help="with --correction-rank: the correction reads the image input "
                        "average-pooled K x K (R x (inputs / K^2 + kept units) numbers per mode, "
                        "so K^2 times the rank for the same storage; default 1 = off)")
    g.add_argument("--correction-scale", type=at_least(0, float, strict=True), default=None,
                   metavar="S", help="with --correction-rank: the correction's output scale, "
                                     "its effective learning rate (default 0.1)")
    g.add_argument("--method-option", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="any field of the method's config, e.g. --method-option rank=4 (repeatable)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--modes", type=csv_list, default=None,
                   help="modes to adapt to, comma-separated: MNIST rot<degrees> or corruptions "
                        "noise<sigma>, blur, invert (default rot0,rot45), or folder names of "
                        "--modes-dir (default: every folder)")
    p.add_argument("--modes-dir", default=None, metavar="MODES",
                   help="your own modes: MODES/<mode>/train.npz, test.npz [, calibration.npz] "
                        "with x float32 [N, ...] and y int64 [N] (instead of MNIST)")
    p.add_argument("--foundation", default=None,
                   help="reuse this foundation instead of training one: a run directory "
                        "written by `taugate train` (e.g. out/demo/run) or the foundation's "
                        ".safetensors/.json stem")
    p.add_argument("--foundation-only", action="store_true", help="train the foundation only")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                   help="your own frozen model: a function in FILE.py returning an nn.Module "
                        "(no foundation is trained)")
    g.add_argument("--weights", default=None, metavar="W.safetensors",
                   help="weights for --model, loaded strictly (safetensors only, never pickle); "
                        "required unless --weights-in-factory")
    g.add_argument("--weights-in-factory", action="store_true",
                   help="--model's factory returns a trained model (loads its weights itself), "
                        "so no --weights is needed")
    g.add_argument("--hf", default=None, metavar="DIR",
                   help="a Hugging Face model folder written by save_pretrained (read offline, "
                        "safetensors only): BertForSequenceClassification, "
                        "ViTForImageClassification or LlamaForSequenceClassification; its FFN "
                        "units are gated (docs/huggingface.md; needs taugate[hf])")
    g.add_argument("--targets", default=None, metavar="PATTERN[,PATTERN]",
                   help="nn.Linear module paths whose output units get tau/gamma: exact names "
                        "or regexes (full match), e.g. 'blocks\\.\\d+\\.ffn\\.fc1' (default: every "
                        "Linear whose output goes through a ReLU/GELU module into another Linear)")
    g.add_argument("--family", default="mlp",
                   help="built-in foundation family when no --model is given: mlp (default, "
                        "the paper's) or vit")
    g.add_argument("--family-option", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the family's config, e.g. --family-option depth=2 (vit: "
                        "patch, dim, heads, depth, ffn, activation)")
    g = p.add_argument_group("foundation")
    g.add_argument("--hidden", type=positive_int_list, default=[128, 128],
                   help="mlp hidden widths, comma-separated (default 128,128)")
    g.add_argument("--mixture", type=csv_list, default=None,
                   help="modes the foundation is pretrained on (default rot0,rot45 on MNIST; "
                        "the adapted modes with --modes-dir)")
    g.add_argument("--epochs", type=at_least(1), default=2, help="foundation epochs (default 2)")
    g.add_argument("--lr", type=at_least(0, float, strict=True), default=None,
                   help="foundation lr (default: mlp 0.05 SGD, vit 0.001 Adam)")
    g.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                   help="foundation optimizer (default: mlp sgd, vit adam)")
    g.add_argument("--batch-size", type=at_least(1), default=256, help="batch size (default 256)")
    g.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_method_arguments(p)
    add_data_arguments(p)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


_METHOD_FLAGS = ("sharpness", "activity_lambda", "unit_l1", "gain_lr_scale", "retune_epochs",
                 "retune_lr_scale", "retune_schedule", "target_mac_ratio", "correction_rank",
                 "correction_pool", "correction_scale")


def foundation_stem(text: str) -> Path:
    """``--foundation`` as a stem: a run directory becomes ``RUN/foundation``; a
    ``.safetensors``/``.json`` suffix is dropped. Errors name the flag and what is accepted."""
    p = Path(text)
    if p.is_dir():
        if (p / "foundation.json").is_file():
            return p / "foundation"
        raise ValueError(f"--foundation {text}: a directory without foundation.json; pass a run "
                         f"directory written by `taugate train` (e.g. out/demo/run) or a "
                         f"foundation's stem (e.g. out/demo/run/foundation)")
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    if not stem.with_suffix(".json").is_file():
        raise FileNotFoundError(f"--foundation {text}: no {stem.with_suffix('.json')}; pass a "
                                f"run directory written by `taugate train` (e.g. out/demo/run) "
                                f"or a foundation's stem (e.g. out/demo/run/foundation)")
    return stem


def foundation_hidden(stem: Path) -> list[int] | None:
    """The mlp hidden widths recorded in a foundation's JSON (read without loading torch); None
    for another family (the sparse recipe is the mlp's there: not tuned per family)."""
    try:
        config = json.loads(stem.with_suffix(".json").read_text("utf-8"))
        hidden = (config.get("backbone") or {}).get("hidden")
        return None if hidden is None else [int(w) for w in hidden]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"--foundation {stem}: cannot read the backbone's hidden widths from "
                         f"{stem.with_suffix('.json')} ({exc})") from exc


def method_config(args, hidden=None) -> dict:
    """The method's config fields: the sparse recipe (if asked; scaled to the ``hidden``
    widths), then --method-option, then the named flags, later ones winning."""
    for flag, off in (("correction_rank", 0), ("correction_pool", 1), ("correction_scale", None)):
        if getattr(args, flag) not in (None, off) and args.method != "taugate":
            raise ValueError(f"--{flag.replace('_', '-')}: expected --method taugate (the "
                             f"correction trains with its thresholds and gains), got --method "
                             f"{args.method}")
    cfg = sparse_recipe(hidden or args.hidden) if args.sparse else {}
    cfg.update(args.method_option)
    for flag in _METHOD_FLAGS:
        if getattr(args, flag) is not None:
            cfg[flag] = getattr(args, flag)
    return cfg


def run_config(args, out: str):
    from taugate.training.backbone import FoundationConfig
    from taugate.training.families import get_family, pretrainable
    from taugate.training.families.mlp import BackboneConfig
    from taugate.training.loop import TrainConfig
    from taugate.training.pipeline import AdaptConfig
    from taugate.training.runs import RunConfig

    family = get_family(getattr(args, "family", "mlp"))
    if not family.pretrainable:
        raise ValueError(f"--family {family.name}: not pretrained by taugate; give your model "
                         f"with --model FILE.py:FACTORY, or --family one of "
                         f"{', '.join(pretrainable())}")
    modes_dir = getattr(args, "modes_dir", None)
    modes = args.modes or (None if modes_dir else ["rot0", "rot45"])
    mixture = args.mixture or ["rot0", "rot45"]  # with --modes-dir: the adapted modes (below)
    stem = getattr(args, "foundation", None)
    stem = foundation_stem(stem) if stem else None
    hidden = (foundation_hidden(stem) if stem else None) or args.hidden
    method_flags = {f: "--" + f.replace("_", "-") for f in _METHOD_FLAGS}
    method_flags.update({k: f"--method-option {k}" for k, _ in args.method_option})
    family_flags = {k: f"--family-option {k}" for k, _ in getattr(args, "family_option", [])}
    family_flags.update({"hidden": "--hidden", "epochs/batch_size/lr": "--epochs/--batch-size/--lr"})
    with flag_named(family_flags):
        foundation = FoundationConfig(
            backbone=BackboneConfig(hidden=tuple(args.hidden)), modes=tuple(mixture),
            epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else family.lr, seed=args.seed,
            family=family.name, family_config=dict(getattr(args, "family_option", [])),
            optimizer=getattr(args, "optimizer", None) or family.optimizer,
        )
    with flag_named(method_flags):
        adapt = AdaptConfig(
            method=args.method, method_config=method_config(args, hidden),
            train=TrainConfig(epochs=args.adapt_epochs, batch_size=args.batch_size,
                              lr=args.adapt_lr, seed=args.seed,
                              min_steps=args.adapt_min_steps),
        )
    return RunConfig(
        out=out,
        modes=None if modes is None else tuple(modes),
        foundation=foundation,
        adapt=adapt,
        data=data_config(args),
        foundation_path=str(stem) if stem else None,
        foundation_only=getattr(args, "foundation_only", False),
        device=args.device,
        progress=not args.quiet,
        modes_dir=modes_dir,
        model=getattr(args, "model", None),
        weights=getattr(args, "weights", None),
        weights_in_factory=getattr(args, "weights_in_factory", False),
        hf=getattr(args, "hf", None),
        targets=getattr(args, "targets", None),
        mixture_from_modes=bool(modes_dir) and not args.mixture,
    )


TRAIN_HEADERS = ["mode", "method", "units kept", "MACs", "stored/mode", "acc dense", "acc soft",
                 "acc hard"]


def summary(run_dir, modes) -> str:
    """Per mode: the dense frozen model's test accuracy beside the adapter's (soft, hard) and
    the MACs `taugate export` would keep (the one compaction, exporting/compaction.py) and the
    numbers the mode stores beside the backbone; a line for each mode export would refuse."""
    import torch

    from taugate.exporting.compact import linear_macs
    from taugate.exporting.compaction import compact_mode
    from taugate.exporting.norms import folded_foundation
    from taugate.exporting.prune import PruneConfig
    from taugate.exporting.regression import DenseComparison, check_not_worse
    from taugate.summaries import top1
    from taugate.training.corrections import stored_numbers
    from taugate.training.loaded import load_run

    run = load_run(run_dir, modes=list(modes))
    # a report, not the export: the pruning guard must not stop it (export applies it)
    report_only = PruneConfig(max_accuracy_drop=1.0)
    # BatchNorms folded as export folds them: a pruned channel leaves no statistics behind
    foundation = folded_foundation(run.foundation, [m.spec for m in run.modes.values()])
    rows, comparisons = [], []
    with torch.no_grad():
        for name, m in run.modes.items():
            x, y = m.test
            c = compact_mode(name, foundation, m.spec, m.calibration, m.test, report_only)
            soft = top1(m.adapter.model.eval()(x), y) if len(y) else float("nan")
            hard = top1(m.hard_model()(x), y) if len(y) else float("nan")
            macs = mac_ratio_text(linear_macs(foundation, x), linear_macs(c.small, x))
            stored = stored_numbers(m.adapter.method, m.adapter.model, c.units_kept[0])
            rows.append([name, m.method, c.units, macs, f"{stored:,}", f"{c.dense_test_accuracy:.4f}",
                         f"{soft:.4f}", f"{hard:.4f}"])
            comparisons.append(DenseComparison(name, c.test_accuracy, c.dense_test_accuracy))
    notes = check_not_worse(comparisons, PruneConfig().max_accuracy_drop, True)
    notes = [n.replace("; exported anyway (--allow-worse)",
                       "; `taugate export` will refuse it unless --allow-worse") for n in notes]
    return "\n".join([format_table(TRAIN_HEADERS, rows), *(f"warning: {n}" for n in notes)])


def run(args) -> int:
    from taugate.training.budget import CLI_FLAGS, adaptation_notes
    from taugate.training.runs import open_source, train_run

    config = run_config(args, args.out)
    data = open_source(config)  # --modes-dir folders, else MNIST
    trained = train_run(config, data)
    print(f"foundation: {trained.path / 'foundation.safetensors'} (sha256 {trained.foundation_sha[:12]})")
    for mode, path in trained.adapters.items():
        print(f"adapter {mode}: {path}")
    if trained.adapters:
        print(summary(trained.path, trained.adapters))
    for mode, outcome in trained.outcomes.items():
        for note in adaptation_notes(mode, outcome, CLI_FLAGS):
            print(f"warning: {note}")
    return 0
