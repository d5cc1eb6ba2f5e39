"""The validated manifest as dataclasses (docs/bundle-v2.md, section 3): what
``taugate.bundle.manifest`` parses ``manifest.json`` into. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from taugate.bundle.names import DENSE

BUNDLE_FORMAT = "taugate-bundle"  # manifest.json's "format"
PRECISIONS = ("fp32", "int8")  # fp32: the entry's own file; others: entry["variants"][p]
BATCH = "batch"  # the name of the dynamic batch axis in input/output shapes


def _checked(kind: str, check, value: dict):
    """``check(value)`` with the manifest reader's rules; its error re-worded as a ValueError
    about ``kind`` (a spec built in code or read from run.json is not a manifest)."""
    from taugate.bundle.errors import BundleFormatError

    try:
        return check(value)
    except BundleFormatError as exc:
        raise ValueError(f"{kind} spec: {str(exc).removeprefix('manifest.json: ')}") from None


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``name`` float32 ``[batch, *shape]``, or int64 ``[batch, 2, length]``
    token ids and attention mask with a ``{"kind": "tokens", "length", "vocab"}`` layout
    (:meth:`tokens`; Hugging Face text models).

    ``range``: None (no range check; negative values fine) or (low, high). ``layout``: None or
    ``{"kind": "image", "channels", "height", "width"}``. ``uint8_pixels``: uint8 inputs are
    0-255 pixels scaled by 1/255 (format 1 bundles, and format 2 image inputs in [0, 1]; None:
    that rule decides). Validated on construction by the manifest reader's rules
    (taugate/bundle/manifest.py); :meth:`to_dict` is the manifest's ``input`` object.
    """

    name: str
    dtype: str
    shape: tuple  # per-sample shape (after the batch axis), e.g. (784,) or (1, 28, 28)
    range: tuple[float, float] | None
    layout: dict | None = None
    uint8_pixels: bool | None = None

    def __post_init__(self) -> None:
        from taugate.bundle.manifest import input_fields

        if isinstance(self.shape, (str, bytes)) or not hasattr(self.shape, "__iter__"):
            raise ValueError(f"input spec: shape: expected a list of sizes, got {self.shape!r}")
        raw = {"name": self.name, "dtype": self.dtype, "shape": [BATCH, *self.shape],
               "range": list(self.range) if isinstance(self.range, (tuple, list)) else self.range,
               "layout": self.layout}
        name, dtype, shape, rng, layout = _checked("input", input_fields, {"input": raw})
        for key, value in (("shape", shape), ("range", rng), ("layout", layout)):
            object.__setattr__(self, key, value)
        if self.uint8_pixels is None:
            object.__setattr__(self, "uint8_pixels", layout is not None and rng == (0.0, 1.0))

    @classmethod
    def plain(cls, shape, name: str = "input", range=None) -> InputSpec:  # the manifest's word
        """Any per-sample ``shape`` of float32 values, no layout (tabular features, tensors)."""
        return cls(name, "float32", tuple(int(d) for d in shape), range, None)

    @classmethod
    def image(cls, channels: int, height: int, width: int, name: str = "pixels",
              range=(0.0, 1.0), flat: bool = True) -> InputSpec:  # the manifest's word
        """An image of ``channels x height x width`` pixels, flat ``[C*H*W]`` or ``[C, H, W]``."""
        shape = (channels * height * width,) if flat else (channels, height, width)
        return cls(name, "float32", shape, range,
                   {"kind": "image", "channels": channels, "height": height, "width": width})

    @classmethod
    def tokens(cls, length: int, vocab: int | None = None, name: str = "tokens") -> InputSpec:
        """int64 ``[2, length]`` per sample: token ids (in [0, vocab)) and attention mask."""
        return cls(name, "int64", (2, int(length)), None,
                   {"kind": "tokens", "length": int(length), "vocab": vocab})

    @property
    def token_length(self) -> int | None:
        """Tokens per sample when the input is token ids + mask, else None."""
        return self.layout["length"] if self.layout and self.layout["kind"] == "tokens" else None

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """The inverse of :meth:`to_dict` (a manifest's or run.json's ``input`` object)."""
        from taugate.bundle.manifest import input_fields

        return cls(*_checked("input", input_fields, {"input": d}))

    def to_dict(self) -> dict:
        """The manifest's ``input`` object (docs/bundle-v2.md)."""
        return {"name": self.name, "dtype": self.dtype, "shape": [BATCH, *self.shape],
                "range": list(self.range) if self.range is not None else None,
                "layout": dict(self.layout) if self.layout is not None else None}

    @property
    def features(self) -> int:
        """Values per sample (the product of ``shape``)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) when the layout is an image, else None."""
        if self.layout and self.layout.get("kind") == "image":
            return (self.layout["height"], self.layout["width"])
        return None

    @property
    def channels(self) -> int | None:
        return self.layout["channels"] if self.image_shape else None


@dataclass(frozen=True)
class OutputSpec:
    """The model output: ``name`` float32 logits [batch, classes]; ``labels`` may be None.
    Validated on construction by the manifest reader's rules; :meth:`to_dict` is the
    manifest's ``output`` object."""

    name: str
    dtype: str
    classes: int
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from taugate.bundle.manifest import output_fields

        labels = self.labels
        raw = {"name": self.name, "dtype": self.dtype, "shape": [BATCH, self.classes],
               "labels": list(labels) if isinstance(labels, (tuple, list)) else labels}
        object.__setattr__(self, "labels", _checked("output", output_fields, {"output": raw})[3])

    @classmethod
    def logits(cls, classes: int, labels=None, name: str = "logits") -> OutputSpec:
        """float32 logits over ``classes`` classes (``labels``: one string per class, or None)."""
        return cls(name, "float32", int(classes), tuple(labels) if labels is not None else None)

    @classmethod
    def from_dict(cls, d: dict) -> OutputSpec:
        """The inverse of :meth:`to_dict` (a manifest's or run.json's ``output`` object)."""
        from taugate.bundle.manifest import output_fields

        return cls(*_checked("output", output_fields, {"output": d}))

    def to_dict(self) -> dict:
        """The manifest's ``output`` object (docs/bundle-v2.md)."""
        return {"name": self.name, "dtype": self.dtype, "shape": [BATCH, self.classes],
                "labels": list(self.labels) if self.labels is not None else None}


@dataclass(frozen=True)
class FileRef:
    """A bundle file and its sha256 (``name`` says what it is in error messages)."""

    name: str
    file: str
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    """One model file of the bundle (the dense baseline or a mode) and its manifest facts.

    ``facts`` is the manifest entry as written (the parsed JSON itself, shared with the
    manifest's ``raw``, and its equal short lists and objects with other entries': read it,
    never change it); ``mode_facts`` the free-form facts of the mode (format 1: ``{"angle":
    ...}``; format 2: the entry's ``facts`` object itself, as read-only). ``weights`` + ``materialize``: a weightless graph whose
    initializers are built at load (format 2 shared backbone), else None.
    """

    name: str
    file: str  # relative to the bundle directory, POSIX separators
    sha256: str
    macs: int
    facts: dict = field(default_factory=dict)
    mode_facts: dict = field(default_factory=dict)
    weights: FileRef | None = None
    materialize: tuple | None = None  # of MaterializeStep


@dataclass(frozen=True)
class MaterializeStep:
    """How one initializer of a weightless graph is built (docs/bundle-v2.md, section 4)."""

    # slots: a manifest of 1,000 modes holds 6,000 of these (no per-instance __dict__)
    __slots__ = ("name", "source", "tensor", "take", "scale", "add", "dtype", "shape")
    name: str  # initializer name in the graph
    source: str  # "backbone" | "mode"
    tensor: str  # tensor name in that safetensors file
    take: tuple  # ((axis, index tensor name in the mode file), ...), applied in order
    scale: tuple | None  # (axis, vector name in the mode file), several such pairs applied in
    # order (a row and a column scale), or None
    add: str | None  # tensor name in the mode file or None
    dtype: str  # the result's dtype ("float32", ...)
    shape: tuple  # the result's shape


def scale_pairs(scale) -> tuple:
    """A step's ``scale`` as a tuple of (axis, vector name) pairs (empty for None)."""
    if not scale:
        return ()
    return (tuple(scale),) if not isinstance(scale[0], (tuple, list)) else \
        tuple(tuple(p) for p in scale)


@dataclass(frozen=True)
class RouterSpec:
    """The bundle's router (docs/bundle-format.md, "The router"): an ONNX graph from the flat
    input ``features`` float32 [batch, F] to ``best_mode`` int64 [batch] (the index of the row's
    mode in ``modes``; routers fitted before it answer ``mode_scores`` [batch, len(modes)]
    instead) and ``distance`` [batch, 1], and the threshold above which a row is of no known
    mode."""

    file: str
    sha256: str
    modes: tuple  # the bundle's modes, in the order of the graph's mode_scores columns
    threshold: float | None  # distance above this: "unknown"; None: never unknown
    percentile: float | None  # of known calibration rows the threshold was set at
    facts: dict = field(default_factory=dict)  # free-form (how it was fitted, its accuracy)
    name: str = "router"  # what error messages call it

    INPUT = "features"  # the graph's input and outputs (fixed names)
    BEST = "best_mode"
    SCORES = "mode_scores"  # what routers answered before best_mode (still read)
    DISTANCE = "distance"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. ``raw`` is the parsed JSON as written."""

    format: str
    format_version: int
    created_by: str
    input: InputSpec
    output: OutputSpec
    dense: ModelEntry
    modes: dict  # name -> ModelEntry, in manifest order
    raw: dict = field(repr=False, default_factory=dict)
    family: str = "mlp"
    targets: tuple = ()
    backbone: FileRef | None = None
    router: RouterSpec | None = None

    def entry(self, name: str) -> ModelEntry | None:
        """The entry of mode ``name`` (or of the dense model for ``DENSE``); None if unknown."""
        return self.dense if name == DENSE else self.modes.get(name)

    def files(self) -> list:
        """Every file the bundle's manifest covers (FileRef or ModelEntry), each once."""
        from taugate.bundle.manifest import variant_entry  # it imports this module

        out = [self.backbone] if self.backbone else []
        out += [self.router] if self.router else []
        for entry in (self.dense, *self.modes.values()):
            out += [entry] + ([entry.weights] if entry.weights else [])
            out += [v for p in PRECISIONS[1:] if (v := variant_entry(entry, p)) is not None]
        return out
