"""The validated manifest as dataclasses (docs/bundle-v2.md, section 3): what
``taugate.bundle.manifest`` parses ``manifest.json`` into. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from taugate.bundle.names import DENSE

PRECISIONS = ("fp32", "int8")  # fp32: the entry's own file; others: entry["variants"][p]


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``name`` float32 ``[batch, *shape]``.

    ``range``: None (no range check; negative values fine) or (low, high). ``layout``: None or
    ``{"kind": "image", "channels", "height", "width"}``. ``uint8_pixels``: uint8 inputs are
    0-255 pixels scaled by 1/255 (format 1 bundles, and format 2 image inputs in [0, 1]).
    """

    name: str
    dtype: str
    shape: tuple  # per-sample shape (after the batch axis), e.g. (784,) or (1, 28, 28)
    range: tuple[float, float] | None
    layout: dict | None = None
    uint8_pixels: bool = False

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
    """The model output: ``name`` float32 logits [batch, classes]; ``labels`` may be None."""

    name: str
    dtype: str
    classes: int
    labels: tuple[str, ...] | None


@dataclass(frozen=True)
class FileRef:
    """A bundle file and its sha256 (``name`` says what it is in error messages)."""

    name: str
    file: str
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    """One model file of the bundle (the dense baseline or a mode) and its manifest facts.

    ``facts`` is the manifest entry as written; ``mode_facts`` the free-form facts of the mode
    (format 1: ``{"angle": ...}``). ``weights`` + ``materialize``: a weightless graph whose
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

    name: str  # initializer name in the graph
    source: str  # "backbone" | "mode"
    tensor: str  # tensor name in that safetensors file
    take: tuple  # ((axis, index tensor name in the mode file), ...), applied in order
    scale: tuple | None  # (axis, vector name in the mode file) or None
    add: str | None  # tensor name in the mode file or None
    dtype: str  # the result's dtype ("float32", ...)
    shape: tuple  # the result's shape


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

    def entry(self, name: str) -> ModelEntry | None:
        """The entry of mode ``name`` (or of the dense model for ``DENSE``); None if unknown."""
        return self.dense if name == DENSE else self.modes.get(name)

    def files(self) -> list:
        """Every file the bundle's manifest covers (FileRef or ModelEntry), each once."""
        from taugate.bundle.manifest import variant_entry  # it imports this module

        out = [self.backbone] if self.backbone else []
        for entry in (self.dense, *self.modes.values()):
            out += [entry] + ([entry.weights] if entry.weights else [])
            out += [v for p in PRECISIONS[1:] if (v := variant_entry(entry, p)) is not None]
        return out
