"""Shrink and perturb as a transferlab strategy, defined in a user's own file.

Ash & Adams (2020, "On Warm-Starting Neural Network Training", NeurIPS) start a network
from its previous weights shrunk toward zero plus a little fresh noise:
`w = shrink · w_source + perturb · w_fresh`, where `w_fresh` is drawn by the layer's own
initialiser (their reference code adds a freshly initialised network scaled by `sigma`).
Every layer trains. Use it beside the catalogue:

    transferlab --extension examples/shrink_perturb.py run examples/shrink_perturb.toml

or in Python: `import shrink_perturb` (or `transferlab.load_extension("shrink_perturb.py")`),
then `transferlab.run(...)` with `{ name = "shrink_perturb" }` among the strategies.
"""

from dataclasses import dataclass, replace
from typing import ClassVar

import transferlab
from transferlab.errors import StrategyError
from transferlab.strategies import Transfer

__version__ = "1.0"


@transferlab.register_strategy
@dataclass(frozen=True)
class ShrinkPerturb(transferlab.Strategy):
    """Start from `shrink` × the source's weights + `perturb` × fresh weights; every layer trains."""

    shrink: float = 0.5
    perturb: float = 0.01
    name: ClassVar[str] = "shrink_perturb"
    summary: ClassVar[str] = "start from shrink × source weights + perturb × fresh weights; every layer trains"
    reference: ClassVar[str] = "Ash & Adams 2020, On Warm-Starting Neural Network Training"

    def __post_init__(self):
        if not 0 <= self.shrink <= 1:
            raise StrategyError(f"{self.shrink} must be between 0 and 1", "shrink")
        if self.perturb < 0:
            raise StrategyError(f"{self.perturb} must be 0 or more", "perturb")

    def recipe(self, source, head, epochs, n_inputs=None, classes=None):
        start = Transfer(freeze=0).recipe(source, head, epochs, n_inputs, classes)  # every weight reused, all train
        layers = len(start.origins)
        notes = tuple(note if origin is None else f"{note}, × {self.shrink:g} + fresh × {self.perturb:g}"
                      for note, origin in zip(start.notes, start.origins))
        return replace(start, source_scale=(self.shrink,) * layers, fresh_scale=(self.perturb,) * layers,
                       notes=notes)
