"""Hugging Face ``transformers`` models: ``--hf DIR`` (a folder ``save_pretrained`` wrote).

The folder is read offline (``local_files_only``) and only from safetensors weights (never a
pickled ``pytorch_model.bin``). HF models rarely trace with the generic torch.fx tracer, so
their sites come from a table of known feed-forward layouts keyed by ``config.model_type``
(:data:`LAYOUTS`), not from tracing; an unknown type is refused by name with the supported ones.

The model is wrapped in :class:`HFClassifier`, one tensor in and logits out, so training,
compaction and export treat it as any other module: text models take int64 ``[N, 2, L]``
(row 0 the token ids, row 1 the attention mask: the runtime also accepts them as two arrays),
vision models float ``pixel_values`` ``[N, C, H, W]`` (or flat ``[N, C*H*W]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from taugate.training.families.base import Family


@dataclass(frozen=True)
class FFNLayout:
    """Where the feed-forward units of one architecture are: ``block`` (a regular expression
    over module paths) holds ``producer -> act -> consumer`` (and ``up``, a gated FFN)."""

    block: str
    producer: str
    act: str
    consumer: str
    up: str | None = None


_ENCODER = FFNLayout(r"(?:.+\.)?encoder\.layer\.\d+", "intermediate.dense",
                     "intermediate.intermediate_act_fn", "output.dense")
#: config.model_type -> its FFN layouts (transformers has renamed some between versions)
LAYOUTS: dict[str, tuple[FFNLayout, ...]] = {
    "bert": (_ENCODER,),
    "vit": (_ENCODER, FFNLayout(r"(?:.+\.)?layers\.\d+\.mlp", "fc1", "activation_fn", "fc2")),
    "llama": (FFNLayout(r"(?:.+\.)?layers\.\d+\.mlp", "gate_proj", "act_fn", "down_proj",
                        "up_proj"),),
}
#: the model classes served, and what each takes: token ids + mask, or pixels
TASKS = {"BertForSequenceClassification": "tokens", "LlamaForSequenceClassification": "tokens",
         "ViTForImageClassification": "pixels"}
#: transformers' activation modules (ACT2FN) -> taugate's activation kinds
_ACTIVATIONS = {"GELUActivation": "gelu", "NewGELUActivation": "gelu_tanh",
                "GELUTanh": "gelu_tanh", "PytorchGELUTanh": "gelu_tanh",
                "SiLUActivation": "silu", "SiLU": "silu", "ReLU": "relu", "GELU": "gelu"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("--hf needs the transformers package: pip install 'taugate[hf]'") \
            from None
    return transformers


class HFClassifier(nn.Module):
    """A transformers classifier behind one tensor: int64 ``[N, 2, L]`` (ids, mask) for text,
    float ``[N, C, H, W]`` pixels for vision; returns the logits."""

    def __init__(self, hf: nn.Module, source: str | None = None):
        super().__init__()
        self.hf = hf
        self.source = source  # the save_pretrained folder it was read from
        self.task = TASKS[type(hf).__name__]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "tokens" and self.model_type == "llama":
            return self._decoder_logits(x)
        if self.task == "tokens":
            return self.hf(input_ids=x[:, 0], **self._text_inputs(x)).logits
        cfg = self.hf.config
        if x.dim() == 2:  # flat pixels (MNIST-style sources)
            x = x.reshape(x.shape[0], cfg.num_channels, cfg.image_size, cfg.image_size)
        return self.hf(pixel_values=x).logits

    def _text_inputs(self, x: torch.Tensor) -> dict:
        """Positions, token types and the additive 4-D attention mask, built here from the
        (fixed) sequence length: transformers would build them with ``Range`` and
        ``ConstantOfShape`` nodes, which a bundle's graph may not hold (bundle/graph_check.py).
        Same values as transformers' own (a causal mask for decoders)."""
        length = int(x.shape[-1])  # a constant in the exported graph: the bundle's length
        positions = torch.arange(length, device=x.device)[None]
        keep = x[:, 1, None, None, :].to(torch.float32)  # [N, 1, 1, L]
        if self.hf.config.model_type == "llama":
            causal = torch.ones(length, length, device=x.device).tril()[None, None]
            keep = keep * causal
        mask = (1.0 - keep) * torch.finfo(torch.float32).min
        extra = {"token_type_ids": torch.zeros_like(positions)} \
            if self.hf.config.model_type == "bert" else {}
        return {"attention_mask": mask, "position_ids": positions, **extra}

    def _decoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        """A decoder classifier's logits at each row's last attended token (right padding:
        transformers' last non-pad token), picked by a matrix product, not ``ArgMax``."""
        hidden = self.hf.model(input_ids=x[:, 0], **self._text_inputs(x)).last_hidden_state
        m = x[:, 1].to(hidden.dtype)
        last = m - torch.cat([m[:, 1:], m[:, :1] * 0], dim=1)  # 1 where a run of 1s ends
        return self.hf.score((last[:, None, :] @ hidden)[:, 0])

    @property
    def model_type(self) -> str:
        return self.hf.config.model_type

    def known_sites(self, example: torch.Tensor) -> list:
        """The FFN sites of :data:`LAYOUTS` (training/targets.py calls this instead of
        tracing); ``example`` gives the tokens per sample."""
        from taugate.training.targets import Site

        tokens = int(example.shape[-1]) if self.task == "tokens" else _patches(self.hf.config)
        paths = dict(self.named_modules())
        sites = []
        for path, layout in ((p, lay) for p in paths for lay in LAYOUTS[self.model_type]):
            if not re.fullmatch(layout.block, path) or f"{path}.{layout.producer}" not in paths:
                continue
            prod, act, cons = (f"{path}.{r}" for r in (layout.producer, layout.act,
                                                       layout.consumer))
            up = f"{path}.{layout.up}" if layout.up else None
            kind = _ACTIVATIONS.get(type(paths.get(act)).__name__)
            if kind is None:
                raise ValueError(f"--hf: {act} is a {type(paths.get(act)).__name__}; taugate "
                                 f"gates {', '.join(sorted(_ACTIVATIONS))}")
            p, c = paths[prod], paths[cons]
            sites.append(Site(prod, act, cons, kind, p.in_features, p.out_features,
                              c.out_features, tokens, up=up))
        return sites


def _patches(cfg) -> int:
    return (cfg.image_size // cfg.patch_size) ** 2 + 1  # + the [CLS] token


def check_folder(path: str | Path) -> Path:
    """``path`` as a save_pretrained folder (config.json and safetensors weights), else an
    error naming what is missing."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"--hf: {p} has no config.json (expected a folder written by "
                                f"model.save_pretrained(DIR))")
    if not any(p.glob("*.safetensors")):
        found = sorted(f.name for f in p.iterdir())[:8]
        raise ValueError(f"--hf: {p} has no .safetensors weights (pickled .bin files are never "
                         f"loaded; re-save with model.save_pretrained(DIR)); found: "
                         f"{', '.join(found) or '(nothing)'}")
    return p


def load_hf(path: str | Path) -> HFClassifier:
    """The classifier in the save_pretrained folder ``path``, read offline (see the module
    docstring); an unsupported model type or class is refused naming the supported ones."""
    tf = _transformers()
    tf.utils.logging.disable_progress_bar()  # no "Loading weights" bars in taugate's output
    p = check_folder(path)
    config = tf.AutoConfig.from_pretrained(p, local_files_only=True)
    if config.model_type not in LAYOUTS:
        raise ValueError(f"--hf: model_type {config.model_type!r} is not supported; taugate "
                         f"knows the FFN layout of: {', '.join(LAYOUTS)}")
    arch = (getattr(config, "architectures", None) or [None])[0]
    if arch not in TASKS:
        raise ValueError(f"--hf: {arch!r} is not a supported model class; supported: "
                         f"{', '.join(TASKS)}")
    cls = getattr(tf, arch)
    hf = cls.from_pretrained(p, local_files_only=True, use_safetensors=True,
                             attn_implementation="eager")  # eager: exports to ONNX
    return HFClassifier(hf.float().eval(), str(p.resolve()))


def wrap(hf: nn.Module) -> HFClassifier:
    """A transformers model built in Python (tests, notebooks) as taugate's classifier."""
    name = type(hf).__name__
    if name not in TASKS or hf.config.model_type not in LAYOUTS:
        raise ValueError(f"{name} ({hf.config.model_type}): not supported; supported: "
                         f"{', '.join(TASKS)}")
    hf.config._attn_implementation = "eager"
    return HFClassifier(hf.eval())


def token_vocab(model: nn.Module) -> int | None:
    """The vocabulary size of a text model (token ids lie in [0, vocab)), else None."""
    if isinstance(model, HFClassifier) and model.task == "tokens":
        return int(model.hf.config.vocab_size)
    return None


class HFFamily(Family):
    """A transformers model from a save_pretrained folder; never pretrained here."""

    name = "hf"
    pretrainable = False

    def config(self, values):
        raise ValueError("family 'hf': the model comes from --hf DIR; taugate pretrains only "
                         "the built-in families")

    def foundation_config(self, fc):
        return self.config(fc.family_config)

    def build(self, config=None) -> nn.Module:
        if not isinstance(config, (str, Path)):
            return self.config(config)
        return load_hf(config)

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, HFClassifier)

    def fit_to_data(self, fc, facts):
        return fc

    def foundation_meta(self, model: nn.Module, factory: str | None = None) -> dict:
        # the config travels with the run, so it reopens without the original folder
        return {"family": self.name, "hf_dir": model.source,
                "hf_class": type(model.hf).__name__, "hf_config": model.hf.config.to_dict()}

    def load(self, meta: dict) -> nn.Module:
        tf = _transformers()
        cfg = dict(meta["hf_config"])
        model_type = cfg.pop("model_type", None)
        if model_type not in LAYOUTS or meta.get("hf_class") not in TASKS:
            raise ValueError(f"foundation: hf model {meta.get('hf_class')!r} ({model_type!r}) "
                             f"is not supported; supported: {', '.join(TASKS)}")
        config = tf.AutoConfig.for_model(model_type, **cfg)
        config._attn_implementation = "eager"
        hf = getattr(tf, meta["hf_class"])(config)
        return HFClassifier(hf.float().eval(), meta.get("hf_dir"))
