"""transferlab: does reusing a network trained on a related problem help, and which way is best?

Importing it changes nothing in the process and loads nothing heavy: the names below are
imported on first use (so Ctrl-C while the command starts is still one line). Every entry
point configures the process on first use (Keras on the JAX backend, one XLA CPU device
per core, the persistent compile cache); `transferlab.configure()` does it explicitly.

The public API: `load_study`, `run`, `report`, `results` (and `Results`), `score_models`, `Task` for your
own data, the extension points `Strategy`, `Recipe`, `Layer`, `register_strategy`,
`register_layer`, `load_extension`, and the error family in `transferlab.errors`.
"""

from __future__ import annotations

import importlib

from transferlab._version import __version__

_EXPORTS = {  # public name → (module, attribute)
    "configure": ("transferlab._backend", "configure"),
    "Results": ("transferlab.api", "Results"),
    "load_study": ("transferlab.api", "load_study"),
    "report": ("transferlab.api", "build"),
    "results": ("transferlab.api", "results"),
    "run": ("transferlab.api", "run"),
    "score_models": ("transferlab.api", "score_models"),
    "TransferlabError": ("transferlab.errors", "TransferlabError"),
    "Layer": ("transferlab.layers", "Layer"),
    "register_layer": ("transferlab.layers", "register_layer"),
    "load_extension": ("transferlab.registry", "load_extension"),
    "Recipe": ("transferlab.strategies", "Recipe"),
    "Strategy": ("transferlab.strategies", "Strategy"),
    "register_strategy": ("transferlab.strategies", "register_strategy"),
    "Task": ("transferlab.tasks", "Task"),
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
