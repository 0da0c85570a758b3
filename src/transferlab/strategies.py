"""Strategies: how a target model is derived from a source model.

A strategy is a small declarative value. Its `recipe` says, for each layer, where
the initial weights come from (`"source"` or `"fresh"`), the learning-rate
multiplier of every layer in every epoch (0 = frozen), and an optional L2 pull
toward the source weights. The engine consumes recipes; it knows no strategy.
New strategies are a dataclass and a `recipe` method.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from transferlab.models import Architecture


class StrategyError(ValueError):
    """A strategy that cannot apply to the given architecture; `parameter` names the culprit."""

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Recipe:
    """What the engine needs to start and train one run.

    `origins[l]` is `"source"` or `"fresh"`; `multipliers` is `(epochs, layers)`;
    `penalties` is `None` or one L2-toward-source strength per layer.
    """

    origins: tuple[str, ...]
    multipliers: np.ndarray
    penalties: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Standalone:
    """Train the target from scratch: fresh weights, every layer trains. The baseline."""

    name: ClassVar[str] = "standalone"
    uses_source: ClassVar[bool] = False
    reference: ClassVar[str] = "the tutorial's baseline"

    @property
    def label(self) -> str:
        return "standalone"

    def recipe(self, arch: Architecture, epochs: int) -> Recipe:
        n_layers = len(arch.layers)
        return Recipe(("fresh",) * n_layers, np.ones((epochs, n_layers), np.float32))


@dataclass(frozen=True)
class Transfer:
    """Start from all the source model's weights and freeze the first `freeze` hidden layers.

    `freeze=0` is weight initialisation; `freeze` = all hidden layers is feature extraction.
    """

    freeze: int = 0
    name: ClassVar[str] = "transfer"
    uses_source: ClassVar[bool] = True
    reference: ClassVar[str] = "the tutorial's fixed=k (Yosinski et al. 2014)"

    @property
    def label(self) -> str:
        return f"transfer freeze={self.freeze}"

    def recipe(self, arch: Architecture, epochs: int) -> Recipe:
        if self.freeze > arch.n_hidden:
            raise StrategyError(
                f"{self.freeze} is larger than the number of hidden layers ({arch.n_hidden})", "freeze"
            )
        if self.freeze < 0:
            raise StrategyError(f"{self.freeze} must be 0 or more", "freeze")
        n_layers = len(arch.layers)
        multipliers = np.ones((epochs, n_layers), np.float32)
        multipliers[:, : self.freeze] = 0.0
        return Recipe(("source",) * n_layers, multipliers)


STRATEGIES: dict[str, type] = {cls.name: cls for cls in (Standalone, Transfer)}


def strategy_parameters(cls: type) -> dict[str, object]:
    """Parameter names and defaults of a strategy class (for validation messages and docs)."""
    return {f.name: f.default for f in fields(cls)}


def describe_strategies() -> str:
    """One line listing every strategy and its parameters, for error messages."""
    parts = []
    for name, cls in STRATEGIES.items():
        params = strategy_parameters(cls)
        parts.append(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})" if params else name)
    return ", ".join(parts)


def strategy_to_dict(strategy) -> dict:
    return {"name": strategy.name, **{f.name: getattr(strategy, f.name) for f in fields(strategy)}}
