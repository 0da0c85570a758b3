"""Strategies: how a target model is derived from a source model.

A strategy is a small declarative value. Its `recipe` takes the source model's
architecture, the output layer the target task needs and the number of epochs,
and says:

- the target architecture (usually the source's; a new head or an inserted layer
  changes it, and runs of one architecture form one cohort),
- where each target layer's initial weights come from (a source layer, or fresh),
- the learning-rate multiplier of every layer in every epoch (0 = frozen), and
- an optional L2 pull toward the source weights.

The engine consumes recipes; it knows no strategy. Strategies count *hidden layers*
as the tutorial does: a hidden layer is a Dense layer with the layers after it up to
the next Dense (normalisation, dropout, activation; `Architecture.blocks`), so layers
without weights count toward no hidden layer of their own. When the target needs a different output
layer than the source has (another activation, or regression), every strategy that
reuses the source gets a fresh output layer, as `new_head` does. A reused output layer's
units are matched to the target's classes by name (`transferlab.heads`); a strategy's
`head = "by_position"` keeps positional reuse on purpose.
"""

from __future__ import annotations

import abc
import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Annotated, ClassVar, Literal, Union

import numpy as np
from pydantic import ConfigDict, Discriminator, Field, Tag, create_model

from transferlab import registry
from transferlab.errors import ExtensionError, ModelFileError, StrategyError
from transferlab.heads import BY_NAME, BY_POSITION, HEAD_MODES, Classes, match_head
from transferlab.layers import ACTIVATIONS, Dense, as_shape, layer_widths
from transferlab.models import Architecture, model_inputs, shape_text
from transferlab.words import count

FRESH = None




class InputWidthError(StrategyError):
    """The strategy reuses the source's first layer, which takes another number of features
    than the target has; the study names both feature lists."""

    def __init__(self, source_width, target_width):
        if isinstance(source_width, int) and isinstance(target_width, int):
            takes, has = f"{source_width} features", f"{target_width}"
        else:
            takes, has = f"inputs of shape {shape_text(source_width)}", f"rows of shape {shape_text(target_width)}"
        super().__init__(
            f"reuses the source's first layer, which takes {takes}, but the target has {has}; use new_input "
            "(re-initialises the first layer) or standalone", "input")
        self.source_width, self.target_width = source_width, target_width


@dataclass(frozen=True, eq=False)
class Recipe:
    """What the engine needs to start and train one run.

    `origins[l]` is the source layer whose weights target layer `l` starts from, or
    `None` (fresh, drawn by the layer's initializer); `notes[l]` says why.
    `multipliers` is `(epochs, layers)`; `penalties` is `None` or one L2 strength per
    layer, pulling a Dense kernel toward its source kernel (or toward 0 if fresh).
    `head_units` (None: the output layer as its origin says) gives, per output unit, the
    source unit it starts from (None: fresh), × −1 when `head_negated`: classes matched
    by name (`transferlab.heads`). `head_notice` is what the user should hear about how the
    output layer starts (another shape, classes matched or not, reuse by position), or None.
    `source_scale` / `fresh_scale` (None: 1 and 0), per layer, mix a reused layer's start:
    `source_scale[l] · source + fresh_scale[l] · fresh draw` (shrink and perturb).
    """

    arch: Architecture
    origins: tuple[int | None, ...]
    multipliers: np.ndarray
    penalties: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()
    head_units: tuple[int | None, ...] | None = None
    head_negated: bool = False
    head_notice: str | None = None
    source_scale: tuple[float, ...] | None = None
    fresh_scale: tuple[float, ...] | None = None

    def record(self) -> list[dict]:
        """Per layer: what it is, where it started and how it trained (stored with each run)."""
        rows = []
        for index, spec in enumerate(self.arch.layers):
            row = {
                "layer": index,
                "kind": spec.describe(),
                "origin": "fresh" if self.origins[index] is FRESH else f"source layer {self.origins[index]}",
                "note": self.notes[index] if self.notes else "",
                "learning_rate": schedule_text(self.multipliers[:, index]),
            }
            if self.source_scale is not None and self.origins[index] is not FRESH:
                row["origin"] += (f" ×{self.source_scale[index]:g}"
                                  + (f" + fresh ×{self.fresh_scale[index]:g}" if self.fresh_scale[index] else ""))
            if self.penalties is not None and self.penalties[index]:
                row["l2_toward"] = ("source" if self.origins[index] is not FRESH else "zero") + f" ×{self.penalties[index]:g}"
            rows.append(row)
        return rows


def schedule_text(column: np.ndarray) -> str:
    """`×0 for epochs 1–20, ×0.1 for epochs 21–100` (or `×1` when constant)."""
    parts, start = [], 0
    for epoch in range(1, len(column) + 1):
        if epoch == len(column) or column[epoch] != column[start]:
            span = "" if (start, epoch) == (0, len(column)) else f" for epochs {start + 1}–{epoch}"
            parts.append(f"×{float(column[start]):g}{span}")
            start = epoch
    return ", ".join(parts)



# --- the contract ---------------------------------------------------------------------------


HeadRule = Literal["by_name", "by_position"]


class Strategy(abc.ABC):
    """The contract of a reuse strategy: a frozen dataclass whose fields are its parameters
    (what a study file writes beside `name`; `int`, `float`, `bool`, `str` or a `Literal`,
    each with a default where it has one) and whose one duty is `recipe`: the target model
    to train, from the source architecture. Strategies never train anything themselves.

    Class attributes: `name` (the study file's `name = ...`), `summary` (one line for
    `transferlab strategies`; default: the docstring's first line), `reference` (a
    citation), `uses_source` (False only for a baseline that starts from nothing). A
    subclass that leaves out `recipe` or `name` fails when the class is defined. Register one with
    `transferlab.register_strategy` (or an entry point in the `transferlab.strategies` group).

    Examples
    --------
    >>> @register_strategy
    ... @dataclass(frozen=True)
    ... class HalfRate(Strategy):
    ...     name: ClassVar[str] = "half_rate"
    ...     summary: ClassVar[str] = "start from the source; every layer at half the learning rate"
    ...     def recipe(self, source, head, epochs, n_inputs=None, classes=None):
    ...         recipe = Transfer(freeze=0).recipe(source, head, epochs, n_inputs, classes)
    ...         return dataclasses.replace(recipe, multipliers=recipe.multipliers * 0.5)
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str] = ""
    uses_source: ClassVar[bool] = True

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [] if isinstance(getattr(cls, "name", None), str) else ["name"]
        if getattr(cls, "recipe", None) is Strategy.recipe:
            missing.append("recipe")
        if missing:
            raise TypeError(f"{cls.__qualname__} must define {', '.join(missing)} (the Strategy contract; see "
                            "transferlab.Strategy)")
        if not isinstance(getattr(cls, "summary", None), str):  # the first line of its docstring
            cls.summary = (cls.__doc__ or "").strip().split("\n")[0].rstrip(".")

    @abc.abstractmethod
    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        """The target architecture, each layer's origin, the learning-rate multipliers
        `(epochs, layers)` and an optional L2 pull, for a source model of architecture
        `source`, the output layer `head` the target task needs, `epochs` of training,
        the target's `n_inputs` features (None: the source's) and its `classes` (source
        and target class names, for matching a reused output layer). Raises
        `StrategyError(message, parameter)` when the strategy cannot apply."""

    @property
    def label(self) -> str:
        """The strategy's name in tables and the run identity: its name and every parameter
        that differs from its default (`shrink_perturb shrink=0.5`)."""
        changed = [f"{f.name}={_fmt(value) if isinstance(value, float) else value}"
                   for f in fields(self) if (value := getattr(self, f.name)) != f.default]
        return " ".join([self.name, *changed])


# --- building blocks ----------------------------------------------------------------------


@dataclass
class _Layout:
    """A target model under construction: layers, their origins and notes, block by block."""

    n_inputs: int | tuple[int, ...]
    layers: list = None
    origins: list = None
    notes: list = None
    blocks: list = None
    head_units: tuple | None = None
    head_negated: bool = False
    head_notice: str | None = None
    source: Architecture | None = None  # whose layers it reuses (checked to fit: `_check_reused`)

    def __post_init__(self):
        self.layers, self.origins, self.notes, self.blocks = [], [], [], []

    def add_block(self, specs, origins, notes) -> None:
        start = len(self.layers)
        self.layers += list(specs)
        self.origins += list(origins)
        self.notes += list(notes)
        self.blocks.append(list(range(start, len(self.layers))))

    def arch(self) -> Architecture:
        return Architecture(self.n_inputs, tuple(self.layers))


def _source_block(layout: _Layout, source: Architecture, block: list[int], fresh_note: str | None = None) -> None:
    specs = [source.layers[i] for i in block]
    if fresh_note is None:
        layout.add_block(specs, block, [f"from source layer {i}" for i in block])
    else:
        layout.add_block(specs, [FRESH] * len(block), [fresh_note] * len(block))


def _add_head(layout: _Layout, source: Architecture, head: Dense, reuse: bool, fresh_reason: str = "fresh",
              classes: Classes | None = None, mode: str = BY_NAME) -> None:
    """The output layer: the source's, its units matched to the target's classes by name
    (`heads.match_head`), when `reuse` and it fits; else a fresh one of the target's size.
    Weightless layers right before it with no hidden layer between (a model that is only
    `flatten` and its output layer) come with it, from the source."""
    head_index = len(source.layers) - 1
    leading = [i for i in source.blocks[-1] if i != head_index]
    specs, origins = [source.layers[i] for i in leading], list(leading)
    notes = [f"from source layer {i}" for i in leading]
    if not reuse:
        layout.add_block(specs + [head], origins + [FRESH], notes + [fresh_reason])
        return
    width = layer_widths(layout.n_inputs, layout.layers + specs)[-1]
    if width != source.widths[head_index]:
        layout.add_block(specs + [head], origins + [FRESH], notes + [f"fresh: its input width changed to {width}"])
        return
    match = match_head(source.head, head, classes, mode, head_index)
    layout.head_notice = match.note if match.notable else None
    if match.reuse == "whole":
        layout.add_block(specs + [source.head], origins + [head_index], notes + [match.note])
    elif match.reuse == "mapped":
        layout.add_block(specs + [dataclasses.replace(source.head, units=head.units)], origins + [head_index],
                         notes + [match.note])
        layout.head_units, layout.head_negated = match.units, match.negated
    else:
        layout.add_block(specs + [head], origins + [FRESH], notes + [match.note])


def _width(layout: _Layout) -> int:
    """The output width of the layers placed so far."""
    return layer_widths(layout.n_inputs, layout.layers)[-1]


def _start(source: Architecture, n_inputs, reuses_first: bool = True) -> _Layout:
    """An empty target model on the target's features or input shape (the source's when
    not given); a strategy that reuses the source's first layer needs the same number of
    features, or images (sequences) with the same channels: a convolution's weights do not
    depend on the image size (`_check_reused` checks the layers after it)."""
    n_inputs = source.n_inputs if n_inputs is None else model_inputs(n_inputs)
    target, own = as_shape(n_inputs), source.input_shape
    fits = target == own or (len(own) > 1 and len(target) == len(own) and target[-1] == own[-1])
    if reuses_first and not fits:
        raise InputWidthError(source.n_inputs, n_inputs)
    return _Layout(n_inputs, source=source)


def _check_reused(layout: _Layout, source: Architecture) -> None:
    """Every layer reused from the source gets inputs as wide as it had there (its weights'
    shape), on the target's input shape; else a message naming the layer."""
    try:
        widths = layer_widths(layout.n_inputs, layout.layers)
    except ModelFileError as error:
        raise StrategyError(f"on the target's inputs ({shape_text(layout.n_inputs)}): {error}", "input") from None
    for index, (spec, origin) in enumerate(zip(layout.layers, layout.origins)):
        if origin == FRESH or not spec.weight_shapes(widths[index]):
            continue
        if widths[index] != source.widths[origin]:
            raise StrategyError(
                f"layer {index} ({spec.describe()}) is reused from the source, where it takes {source.widths[origin]} "
                f"values, but on the target's inputs ({shape_text(layout.n_inputs)}) it gets {widths[index]}; use "
                "global pooling instead of flatten (any image size), new_input, or standalone", "input")


def _inputs_text(n_inputs) -> str:
    return f"{n_inputs} input features" if isinstance(n_inputs, int) else f"{shape_text(n_inputs)} inputs"


def _reuse_all(source: Architecture, head: Dense, n_inputs: int | None, reuse_head: bool = True,
               classes: Classes | None = None, mode: str = BY_NAME) -> _Layout:
    """Every hidden layer from the source, and its output layer where it fits."""
    layout = _start(source, n_inputs)
    for block in source.blocks[:-1]:
        _source_block(layout, source, block)
    _add_head(layout, source, head, reuse=reuse_head, fresh_reason="fresh output layer (new_head)",
              classes=classes, mode=mode)
    return layout


def _block_multipliers(layout: _Layout, per_block: np.ndarray) -> np.ndarray:
    """`(epochs, blocks)` → `(epochs, layers)`: every layer of a block gets its block's value."""
    epochs = per_block.shape[0]
    multipliers = np.ones((epochs, len(layout.layers)), np.float32)
    for block, layers in enumerate(layout.blocks):
        multipliers[:, layers] = per_block[:, block : block + 1]
    return multipliers


def _freeze_first(layout: _Layout, k: int, epochs: int) -> np.ndarray:
    per_block = np.ones((epochs, len(layout.blocks)), np.float32)
    per_block[:, :k] = 0.0
    return _block_multipliers(layout, per_block)


def _recipe(layout: _Layout, multipliers: np.ndarray, penalties=None) -> Recipe:
    if layout.source is not None:
        _check_reused(layout, layout.source)
    return Recipe(layout.arch(), tuple(layout.origins), multipliers, penalties, tuple(layout.notes),
                  layout.head_units, layout.head_negated, layout.head_notice)


def _check_head(mode: str) -> None:
    if mode not in HEAD_MODES:
        raise StrategyError(f"{mode!r} is not a head rule; use \"by_name\" (match output units to classes by "
                            "name, the default) or \"by_position\"", "head")


def _head_label(mode: str) -> str:
    return " head by position" if mode == BY_POSITION else ""


def _check_range(value: int, low: int, high: int, parameter: str, what: str) -> None:
    if not low <= value <= high:
        raise StrategyError(f"{value} is outside {low}..{high} ({what})", parameter)


def _has_hidden(source: Architecture) -> str:
    return f"the source has {source.n_hidden} hidden layer{'' if source.n_hidden == 1 else 's'}"


def _check_at_least(value: float, minimum: float, parameter: str) -> None:
    if value < minimum:
        raise StrategyError(f"{value} must be {minimum} or more", parameter)


def _check_positive(value: float, parameter: str) -> None:
    if not value > 0:
        raise StrategyError(f"{value} must be greater than 0", parameter)


def _fmt(value: float) -> str:
    """Short (`0.1`, `1e-05`) where that is exact, else every digit: two strategies whose
    parameters differ never share a label (labels name runs and derive their seeds)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


# --- the strategies ---------------------------------------------------------------------


@dataclass(frozen=True)
class Standalone(Strategy):
    """Train the target from scratch: fresh weights, every layer trains. The baseline."""

    name: ClassVar[str] = "standalone"
    uses_source: ClassVar[bool] = False
    summary: ClassVar[str] = "train the target model from random weights; the baseline"
    reference: ClassVar[str] = "the tutorial's baseline"

    @property
    def label(self) -> str:
        return "standalone"

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        layout = _start(source, n_inputs, reuses_first=False)
        for block in source.blocks[:-1]:
            _source_block(layout, source, block, fresh_note="fresh")
        leading = [source.layers[i] for i in source.blocks[-1][:-1]]  # weightless layers before the output layer
        layout.add_block(leading + [head], [FRESH] * (len(leading) + 1), ["fresh"] * (len(leading) + 1))
        return _recipe(layout, np.ones((epochs, len(layout.layers)), np.float32))


@dataclass(frozen=True)
class Transfer(Strategy):
    """Start from all the source model's weights and freeze the first `freeze` hidden layers.

    `freeze=0` is weight initialisation; `freeze` = all hidden layers is feature extraction.
    """

    freeze: int = 0
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "transfer"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = "start from every source weight; freeze the first `freeze` hidden layers"
    reference: ClassVar[str] = "the tutorial's fixed=k (Yosinski et al. 2014)"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.freeze, 0, "freeze")

    @property
    def label(self) -> str:
        return f"transfer freeze={self.freeze}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        _check_range(self.freeze, 0, source.n_hidden, "freeze", _has_hidden(source))
        layout = _reuse_all(source, head, n_inputs, classes=classes, mode=self.head)
        return _recipe(layout, _freeze_first(layout, self.freeze, epochs))


@dataclass(frozen=True)
class Reinit(Strategy):
    """Keep the first `keep` hidden layers of the source (frozen if `freeze`), re-initialise
    every later layer at random: separates the value of features from that of initialisation."""

    keep: int = 1
    freeze: bool = False
    name: ClassVar[str] = "reinit"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = "keep the first `keep` hidden layers (frozen if `freeze`), re-initialise all later layers"
    reference: ClassVar[str] = "the tutorial's extension: re-initialise the later layers"

    def __post_init__(self):
        if self.keep < 1:
            raise StrategyError(f"{self.keep} must be 1 or more (keep=0 is standalone)", "keep")

    @property
    def label(self) -> str:
        return f"reinit keep={self.keep}" + (" frozen" if self.freeze else "")

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        _check_range(self.keep, 1, source.n_hidden, "keep", _has_hidden(source))
        layout = _start(source, n_inputs)
        for index, block in enumerate(source.blocks[:-1]):
            _source_block(layout, source, block, fresh_note=None if index < self.keep else "re-initialised")
        _add_head(layout, source, head, reuse=False, fresh_reason="re-initialised")
        return _recipe(layout, _freeze_first(layout, self.keep if self.freeze else 0, epochs))


@dataclass(frozen=True)
class InsertLayer(Strategy):
    """Keep the first `after` hidden layers (frozen if `freeze`), insert a new random
    `Dense(units, activation)` after them, then the remaining source layers: each keeps
    its weights where its input width still fits and is re-initialised where not."""

    after: int = 1
    units: int = 5
    activation: str = "relu"
    freeze: bool = True
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "insert_layer"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "keep the first `after` hidden layers (frozen if `freeze`), insert a fresh Dense(`units`, "
        "`activation`), keep later layers whose input width still fits"
    )
    reference: ClassVar[str] = "the tutorial's extension: add a hidden layer"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.units, 1, "units")
        if self.activation not in ACTIVATIONS:
            raise StrategyError(f"{self.activation!r} is not one of {', '.join(ACTIVATIONS)}", "activation")

    @property
    def label(self) -> str:
        frozen = "" if self.freeze or self.after == 0 else " unfrozen"
        return f"insert_layer after={self.after} {self.units} {self.activation}{frozen}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        _check_range(self.after, 0, source.n_hidden, "after", _has_hidden(source))
        hidden = source.blocks[:-1]
        layout = _start(source, n_inputs, reuses_first=self.after > 0)
        for block in hidden[: self.after]:
            _source_block(layout, source, block)
        initializer = source.layers[_first_dense(source, hidden[0])].kernel_initializer if hidden else "glorot_uniform"
        layout.add_block([Dense(self.units, self.activation, initializer)], [FRESH], ["fresh (inserted layer)"])
        for block in hidden[self.after :]:
            dense = _first_dense(source, block)
            if source.shapes[dense][0] == _width(layout):
                _source_block(layout, source, block)
            else:
                _source_block(layout, source, block,
                              fresh_note=f"re-initialised: its input width changed from {source.shapes[dense][0]} to {_width(layout)}")
        _add_head(layout, source, head, reuse=True, classes=classes, mode=self.head)
        return _recipe(layout, _freeze_first(layout, self.after if self.freeze else 0, epochs))


def _first_dense(source: Architecture, block: list[int]) -> int:
    return next(i for i in block if source.layers[i].starts_block)


@dataclass(frozen=True)
class NewHead(Strategy):
    """Every hidden layer from the source (the first `freeze` frozen) under a fresh output
    layer of the target's size and activation: another class count, or regression."""

    freeze: int = 0
    name: ClassVar[str] = "new_head"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "every hidden layer from the source (first `freeze` frozen), a fresh output layer sized to "
        "the target (classes or regression); chosen automatically when the output does not fit"
    )
    reference: ClassVar[str] = "Keras transfer-learning guide; Yosinski et al. 2014"

    def __post_init__(self):
        _check_at_least(self.freeze, 0, "freeze")

    @property
    def label(self) -> str:
        return "new_head" + (f" freeze={self.freeze}" if self.freeze else "")

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        _check_range(self.freeze, 0, source.n_hidden, "freeze", _has_hidden(source))
        layout = _reuse_all(source, head, n_inputs, reuse_head=False)
        return _recipe(layout, _freeze_first(layout, self.freeze, epochs))


@dataclass(frozen=True)
class NewInput(Strategy):
    """Adapt the input: a fresh first hidden layer sized to the target's features, every
    later layer from the source (the first `freeze` of them frozen) and the source's output
    layer where it fits. Lets a source trained on other columns serve the target."""

    freeze: int = 0
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "new_input"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "a fresh first hidden layer on the target's features, every later layer from the source "
        "(the first `freeze` of them frozen): for a source with other input columns"
    )
    reference: ClassVar[str] = "input adaptation (re-learn the input layer; Yosinski et al. 2014's upper layers)"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.freeze, 0, "freeze")

    @property
    def label(self) -> str:
        return "new_input" + (f" freeze={self.freeze}" if self.freeze else "") + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        if source.n_hidden < 1:
            raise StrategyError("the source has no hidden layer to re-initialise; use standalone")
        _check_range(self.freeze, 0, source.n_hidden - 1, "freeze",
                     f"the hidden layers after the first: {_has_hidden(source)}")
        layout = _start(source, n_inputs, reuses_first=False)
        first, *later = source.blocks[:-1]
        _source_block(layout, source, first,
                      fresh_note=f"re-initialised for the target's {_inputs_text(layout.n_inputs)} (new_input)")
        for block in later:
            _source_block(layout, source, block)
        _add_head(layout, source, head, reuse=True, classes=classes, mode=self.head)
        per_block = np.ones((epochs, len(layout.blocks)), np.float32)
        per_block[:, 1 : 1 + self.freeze] = 0.0
        return _recipe(layout, _block_multipliers(layout, per_block))


@dataclass(frozen=True)
class Finetune(Strategy):
    """Start from the source; reused layers learn at `lr` × the learning rate, new layers at
    1×. With `layer_factor` < 1 the rates are discriminative: each reused layer below the
    top one learns `layer_factor` times slower than the one above it (a geometric spread)."""

    lr: float = 0.1
    layer_factor: float = 1.0
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "finetune"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "start from the source; reused layers learn at `lr`× the rate, fresh ones at 1×; "
        "`layer_factor` spreads the rates geometrically down the layers"
    )
    reference: ClassVar[str] = "fine-tuning; discriminative rates from ULMFiT (Howard & Ruder 2018)"

    def __post_init__(self):
        _check_head(self.head)
        _check_positive(self.lr, "lr")
        _check_positive(self.layer_factor, "layer_factor")

    @property
    def label(self) -> str:
        spread = "" if self.layer_factor == 1 else f" layer×{_fmt(self.layer_factor)}"
        return f"finetune lr×{_fmt(self.lr)}{spread}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        layout = _reuse_all(source, head, n_inputs, classes=classes, mode=self.head)
        reused = [b for b, layers in enumerate(layout.blocks) if layout.origins[layers[0]] is not FRESH]
        if not reused:
            raise StrategyError("the source model has no layer the target can reuse; use standalone")
        per_block = np.ones((epochs, len(layout.blocks)), np.float32)
        top = max(reused)
        for block in reused:
            per_block[:, block] = self.lr * self.layer_factor ** (top - block)
        return _recipe(layout, _block_multipliers(layout, per_block))


@dataclass(frozen=True)
class TwoStage(Strategy):
    """The Keras guide's recipe: train only the top (a fresh output layer, or the source's
    if `fresh_head` is false) with the body frozen for `head_epochs`, then unfreeze
    everything at `lr` × the learning rate for the remaining epochs."""

    head_epochs: int = 20
    lr: float = 0.1
    fresh_head: bool = True
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "two_stage"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "train only the output layer (fresh unless `fresh_head = false`) for `head_epochs`, then "
        "every layer at `lr`×"
    )
    reference: ClassVar[str] = "Keras guide 'Transfer learning & fine-tuning' (Chollet)"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.head_epochs, 1, "head_epochs")
        _check_positive(self.lr, "lr")

    @property
    def label(self) -> str:
        head = "" if self.fresh_head else " source head"
        return f"two_stage head={self.head_epochs} lr×{_fmt(self.lr)}{head}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        if self.head_epochs >= epochs:
            raise StrategyError(
                f"{self.head_epochs} leaves no epochs for the second stage (the study trains {epochs})",
                "head_epochs",
            )
        layout = _reuse_all(source, head, n_inputs, reuse_head=not self.fresh_head, classes=classes, mode=self.head)
        per_block = np.full((epochs, len(layout.blocks)), self.lr, np.float32)
        per_block[: self.head_epochs, :-1] = 0.0
        per_block[: self.head_epochs, -1] = 1.0
        return _recipe(layout, _block_multipliers(layout, per_block))


@dataclass(frozen=True)
class GradualUnfreeze(Strategy):
    """Start with only the output layer training and unfreeze one more layer from the top
    every `every` epochs, until all train."""

    every: int = 10
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "gradual_unfreeze"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = "only the output layer trains at first; one more layer from the top every `every` epochs"
    reference: ClassVar[str] = "gradual unfreezing, ULMFiT (Howard & Ruder 2018)"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.every, 1, "every")

    @property
    def label(self) -> str:
        return f"gradual_unfreeze every={self.every}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        layout = _reuse_all(source, head, n_inputs, classes=classes, mode=self.head)
        n_blocks = len(layout.blocks)
        last_start = self.every * (n_blocks - 1)
        if last_start >= epochs:
            raise StrategyError(
                f"{self.every} would leave the first layer frozen for all {count(epochs, 'epoch')}; use every "
                f"≤ {max(1, (epochs - 1) // (n_blocks - 1))}",
                "every",
            )
        per_block = np.zeros((epochs, n_blocks), np.float32)
        for epoch in range(epochs):
            training = min(n_blocks, 1 + epoch // self.every)
            per_block[epoch, n_blocks - training :] = 1.0
        return _recipe(layout, _block_multipliers(layout, per_block))


@dataclass(frozen=True)
class L2SP(Strategy):
    """Start from the source, every layer trains, and the loss adds α/2·‖w − w_source‖² over
    reused kernels and β/2·‖w‖² over fresh ones: the L2-SP regulariser."""

    alpha: float = 0.01
    beta: float = 0.01
    head: HeadRule = BY_NAME
    name: ClassVar[str] = "l2sp"
    uses_source: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "start from the source, all layers train; loss + `alpha`/2·‖w − w_source‖² (reused kernels) "
        "+ `beta`/2·‖w‖² (fresh kernels)"
    )
    reference: ClassVar[str] = "L2-SP, Li, Grandvalet & Davoine 2018"

    def __post_init__(self):
        _check_head(self.head)
        _check_at_least(self.alpha, 0, "alpha")
        _check_at_least(self.beta, 0, "beta")

    @property
    def label(self) -> str:
        return f"l2sp α={_fmt(self.alpha)} β={_fmt(self.beta)}" + _head_label(self.head)

    def recipe(self, source: Architecture, head: Dense, epochs: int, n_inputs: int | None = None,
               classes: Classes | None = None) -> Recipe:
        layout = _reuse_all(source, head, n_inputs, classes=classes, mode=self.head)
        penalties = tuple(
            0.0 if spec.penalised_array is None else (self.alpha if origin is not FRESH else self.beta)
            for spec, origin in zip(layout.layers, layout.origins)
        )
        return _recipe(layout, np.ones((epochs, len(layout.layers)), np.float32), penalties)


CATALOGUE: tuple[type[Strategy], ...] = (Standalone, Transfer, Reinit, InsertLayer, NewHead, NewInput, Finetune,
                                          TwoStage, GradualUnfreeze, L2SP)  # transferlab's own, in the docs' order
REGISTRY = registry.Registry("strategy", "transferlab.strategies", Strategy, key=lambda cls: cls.name)
for _built_in in CATALOGUE:
    REGISTRY.register(_built_in)


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class so study files and the Python API can name it (a decorator).

    Parameters
    ----------
    cls : type[Strategy]
        A frozen dataclass deriving from `transferlab.Strategy`, its parameters typed
        `int`, `float`, `bool`, `str` or a `Literal`.

    Returns
    -------
    type[Strategy]
        `cls` itself.

    Raises
    ------
    ExtensionError
        `cls` breaks the contract (not a `Strategy`, not a frozen dataclass, a parameter
        type a study file cannot write) or its name is taken by another class.

    Examples
    --------
    >>> @transferlab.register_strategy
    ... @dataclass(frozen=True)
    ... class ShrinkPerturb(transferlab.Strategy):
    ...     shrink: float = 0.5
    ...     name: ClassVar[str] = "shrink_perturb"
    ...     def recipe(self, source, head, epochs, n_inputs=None, classes=None): ...  # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ExtensionError(f"{cls!r} is not a Strategy subclass; a strategy must derive from transferlab.Strategy")
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise ExtensionError(f"{getattr(cls, '__qualname__', cls)!r}: a strategy must be a frozen dataclass "
                             "(@dataclass(frozen=True)): its fields are its parameters")
    REGISTRY.register(cls)
    try:
        parameters_model(cls)
    except ExtensionError:
        REGISTRY.unregister(cls.name)
        raise
    return cls


def strategy_class(name: str) -> type[Strategy] | None:
    """The strategy class a study file's `name` means, or None."""
    return REGISTRY.get(name)


_SCALARS = (int, float, bool, str)


def _parameter_type(cls: type, name: str, annotation):
    """A strategy parameter's study-file type: a scalar, a Literal of scalars (or None-able)."""
    allowed = annotation in _SCALARS or typing.get_origin(annotation) is Literal
    if typing.get_origin(annotation) in (Union, types.UnionType):
        allowed = all(arg in _SCALARS or arg is type(None) for arg in typing.get_args(annotation))
    if not allowed:
        raise ExtensionError(f"{cls.__qualname__}.{name}: a strategy parameter must be int, float, bool, str or a "
                             f"Literal (a study file writes it); got {annotation!r}")
    if annotation is int:
        return Annotated[int, Field(ge=-MAX_PARAMETER, le=MAX_PARAMETER)]
    return annotation


MAX_PARAMETER = 65_536  # an integer parameter (a layer count, units): a ceiling that catches typos


_MODELS: dict[type, type] = {}


def parameters_model(cls: type[Strategy]) -> type:
    """The pydantic model of one strategy's study-file entry (`name` and its parameters),
    made from the dataclass fields: types strict, floats finite, no unknown keys."""
    if cls not in _MODELS:
        hints = typing.get_type_hints(cls)
        entries = {"name": (Literal[cls.name], ...)}
        for f in fields(cls):
            default = ... if f.default is dataclasses.MISSING else f.default
            entries[f.name] = (_parameter_type(cls, f.name, hints[f.name]), default)
        _MODELS[cls] = create_model(f"{cls.__name__}Entry",
                                    __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False), **entries)
    return _MODELS[cls]


_UNION: dict[int, object] = {}


def entry_schema():
    """The study file's `[[strategies]]` entry: a pydantic union of every registered
    strategy's model, told apart by `name` (rebuilt when the registry changes)."""
    if REGISTRY.version not in _UNION:
        members = [Annotated[parameters_model(cls), Tag(name)] for name, cls in REGISTRY.items()]
        _UNION.clear()
        _UNION[REGISTRY.version] = Annotated[Union[tuple(members)], Discriminator(
            _entry_name, custom_error_type="unknown_strategy",
            custom_error_message=f"unknown strategy; choose one of {describe_strategies()}")]
    return _UNION[REGISTRY.version]


def _entry_name(entry) -> str | None:
    if isinstance(entry, dict):
        return entry.get("name")
    return getattr(entry, "name", None)


def from_entry(entry, head: str = BY_NAME) -> Strategy:
    """The strategy value of a validated entry (`parameters_model(cls)` instance); `head` is
    the study's rule for a strategy that takes one and does not say. A parameter a
    strategy refuses raises `StrategyError` naming it."""
    cls = REGISTRY.get(entry.name)
    params = {f.name: getattr(entry, f.name) for f in fields(cls)}
    if "head" in params and "head" not in entry.model_fields_set:
        params["head"] = head
    return cls(**params)


def from_dict(data: dict, extensions: dict | None = None) -> Strategy:
    """A stored strategy value (validated when the study was planned). `extensions` (the
    plan's record) names the module a strategy came from when it is not installed now."""
    cls = REGISTRY.get(data["name"])
    if cls is None:
        known = (extensions or {}).get(data["name"])
        where = f" from {known['module']} (version {known['version']})" if known else ""
        raise ExtensionError(f"this study used the strategy {data['name']!r}{where}, which is not installed here; "
                             "install or import it (transferlab.register_strategy, an entry point, or "
                             "--extension FILE) and try again")
    return cls(**{k: v for k, v in data.items() if k != "name"})


def extensions_used(strategies: list[Strategy]) -> dict[str, dict]:
    """`{name: {"kind", "module", "version"}}` for each strategy from outside transferlab."""
    used = {}
    for strategy in strategies:
        found = registry.origin(type(strategy))
        if found is not None:
            used[strategy.name] = {"kind": "strategy", **found}
    return used


def strategy_parameters(cls: type) -> dict[str, object]:
    """Parameter names and defaults of a strategy class (for messages and docs; a required
    parameter's default is shown as `...`)."""
    return {f.name: (... if f.default is dataclasses.MISSING else f.default) for f in fields(cls)}


def describe_strategies() -> str:
    """One line listing every strategy and its parameters as a study file spells them
    (`reinit (keep = 1, freeze = false)`), for error messages."""
    import json

    parts = []
    for name, cls in REGISTRY.items():
        params = {k: v for k, v in strategy_parameters(cls).items() if k != "head"}
        spelled = ", ".join(f"{k} = {'…' if v is ... else json.dumps(v)}" for k, v in params.items())
        parts.append(f"{name} ({spelled})" if params else name)
    return ", ".join(parts) + '; those that may reuse the output layer also take head = "by_name" or "by_position"'


def strategy_to_dict(strategy) -> dict:
    """Name and parameters; `head` only when it is not the default, so a strategy's
    identity (and every run seed derived from it) is what it was before `head` existed."""
    params = {f.name: getattr(strategy, f.name) for f in fields(strategy)}
    if params.get("head") == BY_NAME:
        del params["head"]
    return {"name": strategy.name, **params}
