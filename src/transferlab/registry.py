"""Registries of extension points: strategies and layer types, built in or a user's own.

A registry maps names (what a study file writes) to classes that keep a contract (an
abstract base). Users add theirs with `transferlab.register_strategy(cls)` /
`transferlab.register_layer(cls)`, or ship them in a package that declares entry points
in the `transferlab.strategies` / `transferlab.layers` groups (read on first look-up, as
pytest reads its plugins). Each class's origin (module and version) is what a study's plan
records, so a folder made with an extension names it when that extension is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from transferlab.errors import ExtensionError

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
BUILT_IN = "transferlab"


class Registry:
    """Names → classes of one extension point; `key(cls)` is a class's name."""

    def __init__(self, kind: str, group: str, base: type, key: Callable[[type], str],
                 built_in_modules: tuple[str, ...] = ()) -> None:
        self.kind, self.group, self.base, self._key = kind, group, base, key
        self._classes: dict[str, type] = {}
        self._aliases: dict[str, str] = {}
        self._entry_points_read = False
        # transferlab's own modules that register more classes here, imported on first use
        # (they import the module that owns this registry, so it cannot import them)
        self._built_in_modules = built_in_modules
        self.version = 0  # bumped on every change, so schemas built from the registry know when to rebuild

    def register(self, cls: type, *aliases: str) -> type:
        """Add `cls` (its contract checked); usable as a class decorator.

        Registering the same class again (a reloaded notebook cell) replaces it; another
        class under a taken name is refused with an `ExtensionError`.
        """
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            raise ExtensionError(f"{cls!r} is not a {self.base.__name__} subclass; a {self.kind} must derive "
                                 f"from transferlab.{self.base.__name__}")
        name = self._key(cls)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ExtensionError(f"{cls.__qualname__}: {self.kind} name {name!r} must be 1 to 64 lowercase letters, "
                                 "digits or '_', starting with a letter")
        taken = self._classes.get(name)
        if taken is not None and _identity(taken) != _identity(cls):
            raise ExtensionError(f"{cls.__module__}.{cls.__qualname__}: the {self.kind} name {name!r} is taken by "
                                 f"{taken.__module__}.{taken.__qualname__}; choose another name")
        self._classes[name] = cls
        self._aliases.update(dict.fromkeys(aliases, name))
        self.version += 1
        return cls

    def unregister(self, name: str) -> None:
        """Remove the class registered as `name` (and its aliases); a no-op if there is none."""
        self._classes.pop(name, None)
        self._aliases = {alias: target for alias, target in self._aliases.items() if target != name}
        self.version += 1

    def get(self, name: str) -> type | None:
        """Return the class registered as `name` (or an alias of it), reading entry points first."""
        self._read_entry_points()
        return self._classes.get(self._aliases.get(name, name))

    def names(self) -> list[str]:
        """Every registered name, built-in ones first."""
        self._read_entry_points()
        return list(self._classes)

    def items(self) -> Iterator[tuple[str, type]]:
        """`(name, class)` pairs, in registration order."""
        self._read_entry_points()
        return iter(list(self._classes.items()))

    def classes(self) -> tuple[type, ...]:
        """Every registered class, in registration order."""
        self._read_entry_points()
        return tuple(self._classes.values())

    def _load_built_ins(self) -> None:
        modules, self._built_in_modules = self._built_in_modules, ()
        for module in modules:
            importlib.import_module(module)

    def _read_entry_points(self) -> None:
        self._load_built_ins()
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for entry_point in importlib.metadata.entry_points(group=self.group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # a broken plug-in is named, not a traceback
                raise ExtensionError(f"entry point {entry_point.name!r} ({entry_point.value}) in group {self.group} "
                                     f"failed to load: {type(error).__name__}: {error}") from None
            for cls in loaded if isinstance(loaded, (list, tuple)) else (loaded,):
                self.register(cls)


def _identity(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def origin(cls: type) -> dict[str, str] | None:
    """Where an extension class comes from: its module and version; None for transferlab's own.

    The version is its distribution's, else the module's `__version__`, else "unversioned".
    """
    module = cls.__module__
    top = module.split(".")[0]
    if top == BUILT_IN:
        return None
    version = None
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        version = importlib.metadata.version(distribution)
        break
    if version is None:
        version = str(getattr(sys.modules.get(module), "__version__", "unversioned"))
    return {"module": module, "version": version}


def load_extension(spec: str) -> str:
    """Import a user's extension, whose `register_*` calls add its classes.

    Parameters
    ----------
    spec : str
        A Python file (`my_strategies.py`, imported as module `my_strategies`) or an
        importable module name (`my_package.strategies`).

    Returns
    -------
    str
        The module's name.

    Raises
    ------
    ExtensionError
        The file is missing, the module cannot be imported, or importing it failed.

    Examples
    --------
    >>> transferlab.load_extension("examples/shrink_perturb.py")  # doctest: +SKIP
    'shrink_perturb'
    """
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ExtensionError(f"{spec}: extension file not found")
        name = path.stem
        if not NAME.fullmatch(name.lower()):
            raise ExtensionError(f"{spec}: an extension file's name must be a Python module name")
        # (imported again if it was before: its register_* calls run again, replacing its classes)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # before running it: its classes pickle by this name
        try:
            module_spec.loader.exec_module(module)
        except ExtensionError:
            del sys.modules[name]
            raise
        except Exception as error:
            del sys.modules[name]
            raise ExtensionError(f"{spec}: the extension failed to import: {type(error).__name__}: {error}") from None
        return name
    try:
        importlib.import_module(spec)
    except ImportError as error:
        raise ExtensionError(f"{spec}: cannot import the extension module ({error}); give a .py file or an "
                             "installed module") from None
    return spec
