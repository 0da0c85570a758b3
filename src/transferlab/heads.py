"""Which output unit of a reused source head serves which target class.

A strategy that keeps the source model's output layer must not let unit *i* of the
source become class *i* of the target whatever the classes are called. The rule, by
class name (`by_name`, the default):

- a head with one unit per class: each target class starts from the source unit of the
  class with the same name (reordered as needed); a target class the source never had
  gets a fresh unit (drawn by the layer's own initializer); a source class the target
  lacks is dropped;
- one sigmoid unit (two classes; the unit is the probability of the second class): kept
  when both tasks name the same two classes, negated (weights and bias × −1, so
  sigmoid(−z) = 1 − sigmoid(z)) when their order is swapped, fresh otherwise;
- no class name shared: a fresh output layer, and a note naming both class lists.

`by_position` (a strategy's or the study's `head`) keeps today's positional reuse on
purpose. A source model file whose task is not described has unknown class names: its
units are reused by position, and the note says so. Regression heads are reused by
position (their outputs are the target columns, in order).
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.data.select import listing as names
from transferlab.words import count

BY_NAME, BY_POSITION = "by_name", "by_position"
HEAD_MODES = (BY_NAME, BY_POSITION)


@dataclass(frozen=True)
class Classes:
    """The class names of a transfer's source and target (None: unknown, or regression)."""

    source: tuple[str, ...] | None
    target: tuple[str, ...] | None


@dataclass(frozen=True)
class HeadMatch:
    """How a target's output layer starts: `reuse` is `whole` (the source head as it is),
    `mapped` (unit `j` from source unit `units[j]`, or fresh where None; × −1 if
    `negated`) or `fresh`; `note` says why, naming the classes; `notable` when the user
    should hear of it before reading results (anything but the source head kept as it is,
    its classes equal by name)."""

    reuse: str
    note: str
    units: tuple[int | None, ...] | None = None
    negated: bool = False
    notable: bool = True


def match_head(source_head, target_head, classes: Classes | None, mode: str = BY_NAME,
               source_layer: int = 0) -> HeadMatch:
    """The match of `source_head` (a Dense) to the target's `target_head` and classes."""
    fits = source_head.units == target_head.units and source_head.activation == target_head.activation
    reused = f"from source layer {source_layer}"
    unfit = (f"fresh output layer: the target needs {_units(target_head)}, the source has "
             f"{_units(source_head)} (new_head)")
    known = classes is not None and classes.target is not None and target_head.activation != "linear"
    if not known:
        return HeadMatch("whole", reused, notable=False) if fits else HeadMatch("fresh", unfit)
    if mode == BY_POSITION:
        if not fits:
            return HeadMatch("fresh", unfit)
        return HeadMatch("whole", f"{reused}, reused by position (head = \"by_position\"): "
                                  f"{_positional(source_head, classes)}")
    if classes.source is None:
        if not fits:
            return HeadMatch("fresh", unfit)
        return HeadMatch("whole", f"{reused} by position: the source model's class names are unknown "
                                  f"({_positional(source_head, classes)}); describe its task in [source] "
                                  "to match them by name")
    if source_head.activation != target_head.activation:
        return HeadMatch("fresh", unfit)
    source, target = classes.source, classes.target
    if _per_class(source_head, source) and _per_class(target_head, target):
        return _match_units(source, target, reused)
    if _binary(source_head, source) and _binary(target_head, target):
        return _match_binary(source, target, reused)
    return HeadMatch("fresh", unfit)


def _match_units(source: tuple[str, ...], target: tuple[str, ...], reused: str) -> HeadMatch:
    units = tuple(source.index(name) if name in source else None for name in target)
    if all(unit is None for unit in units):
        return HeadMatch("fresh", _no_shared(source, target))
    if units == tuple(range(len(source))):
        return HeadMatch("whole", f"{reused} (classes {names(target)} matched by name)", notable=False)
    parts = [f"{name} ← source unit {unit}" if unit is not None else f"{name} fresh"
             for name, unit in zip(target, units)]
    dropped = [name for name in source if name not in target]
    text = f"{reused}, units matched by class name: {names(parts)}"
    if dropped:
        text += f"; source class{'es' if len(dropped) > 1 else ''} {names(dropped)} dropped"
    return HeadMatch("mapped", text, units)


def _match_binary(source: tuple[str, ...], target: tuple[str, ...], reused: str) -> HeadMatch:
    if target == source:
        return HeadMatch("whole", f"{reused} (classes {names(target)} matched by name)", notable=False)
    if target == source[::-1]:
        return HeadMatch("mapped", f"{reused}, negated: the target orders the classes {names(target)}, "
                                   f"the source {names(source)} (its sigmoid unit is the second class)",
                         (0,), negated=True)
    if set(source) & set(target):
        return HeadMatch("fresh", f"fresh output layer: the source's sigmoid unit separates {names(source)}, "
                                  f"the target's classes are {names(target)}; one sigmoid unit cannot keep the "
                                  "shared class alone")
    return HeadMatch("fresh", _no_shared(source, target))


def _no_shared(source, target) -> str:
    return (f"fresh output layer: no class name is shared between the source ({names(source)}) and the target "
            f"({names(target)}); set head = \"by_position\" to reuse its units by position")


def _per_class(head, classes) -> bool:
    return head.units == len(classes) and head.units > 1


def _binary(head, classes) -> bool:
    return head.units == 1 and len(classes) == 2


def _positional(head, classes: Classes) -> str:
    target = classes.target
    if head.units == 1 and len(target) == 2:
        return f"its sigmoid unit is target class {target[1]} against {target[0]}"
    pairs = [f"unit {unit} → {name}" for unit, name in enumerate(target)]
    return names(pairs, 4)


def _units(head) -> str:
    return count(head.units, f"{head.activation} unit")
