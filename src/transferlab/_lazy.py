"""Modules imported when first used.

The study-file schema, the layer and strategy specs and the metric knowledge are read by
`config`, the store and the reports, which must not load JAX (reading a study file should
take milliseconds). Their numerical methods still read as plain `jnp.sum(...)`: `jnp` here
is `jax.numpy`, imported on the first attribute access, which only happens while the
engine traces a program.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """A stand-in for the module `name` that imports it on first attribute access."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        module: ModuleType = importlib.import_module(self._name)
        value = getattr(module, attribute)
        self.__dict__[attribute] = value  # later look-ups skip this method
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
