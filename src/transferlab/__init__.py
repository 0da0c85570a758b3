"""transferlab: does reusing a network trained on a related problem help, and which way is best?

Importing it changes nothing in the process. Every entry point below configures the
process on first use (Keras on the JAX backend, one XLA CPU device per core, the
persistent compile cache); `transferlab.configure()` does it explicitly.

The public API: `load_study`, `run`, `report`, `results` (and `Results`), `Task` for your
own data, the extension points `Strategy`, `Recipe`, `Layer`, `register_strategy`,
`register_layer`, `load_extension`, and the error family in `transferlab.errors`.
"""

from transferlab._backend import configure
from transferlab._version import __version__
from transferlab.api import Results, load_study, results, run
from transferlab.api import build as report
from transferlab.errors import TransferlabError
from transferlab.layers import Layer, register_layer
from transferlab.registry import load_extension
from transferlab.strategies import Recipe, Strategy, register_strategy
from transferlab.tasks import Task

__all__ = [
    "Layer", "Recipe", "__version__", "Results", "Strategy", "Task", "TransferlabError", "configure", "load_extension",
    "load_study", "register_layer", "register_strategy", "report", "results", "run",
]
