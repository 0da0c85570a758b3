"""Pin Keras to the JAX backend and give XLA one CPU device per core.

Nothing here runs on import: the CLI calls `configure()` first thing, Python users call
`transferlab.configure()`, and code that imports Keras calls `require_keras()` first.
The device split only takes effect if it runs before JAX initialises its backend. Users
who force another Keras backend get a clear error instead of a different engine.
"""

from __future__ import annotations

import os
import sys

from transferlab.errors import BackendError


def _check_keras_backend() -> None:
    forced = os.environ.get("KERAS_BACKEND")
    if forced and forced != "jax":
        raise BackendError(
            f"KERAS_BACKEND={forced} is set, but transferlab trains on the JAX backend; "
            "unset KERAS_BACKEND or set KERAS_BACKEND=jax."
        )
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "jax":
            raise BackendError(
                f"keras was imported before transferlab with the {keras.backend.backend()!r} "
                "backend (from ~/.keras/keras.json?); set KERAS_BACKEND=jax before importing keras."
            )
    os.environ["KERAS_BACKEND"] = "jax"


def _jax_backend_started() -> bool:
    """Has JAX created its devices? (XLA reads its flags then, not on `import jax`.)"""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def _split_cpu_into_devices() -> None:
    """One XLA host device per core: the engine shards models across them to use every core."""
    if _jax_backend_started():
        return  # too late to change; the engine uses whatever devices exist
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = max(1, min(int(os.environ.get("TRANSFERLAB_CPU_DEVICES", cores or 1)), 64))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def cache_dir() -> str | None:
    """transferlab's per-machine cache folder (compiled programs, measured speeds):
    `TRANSFERLAB_CACHE_DIR`, else `~/.cache/transferlab/xla`; None when set to "off"."""
    cache = os.environ.get("TRANSFERLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transferlab", "xla"
    )
    return None if cache.lower() in ("0", "off", "none") else cache


def _enable_compilation_cache() -> None:
    """Keep compiled engine programs on disk so the next process skips XLA compilation. Set
    through JAX's environment variables when JAX is not imported yet, so that configuring a
    process that never trains (a report, an export) does not import JAX."""
    cache = cache_dir()
    if cache is None:
        return
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        return  # read-only home: run without the cache
    settings = {"jax_compilation_cache_dir": cache, "jax_persistent_cache_min_compile_time_secs": 0.1}
    if "jax" in sys.modules:
        for name, value in settings.items():
            sys.modules["jax"].config.update(name, value)
        return
    for name, value in settings.items():
        os.environ[name.upper()] = str(value)


_configured = False


def require_keras() -> None:
    """Before any `import keras` in transferlab: Keras must run on JAX (set when unset)."""
    _check_keras_backend()


def configure() -> None:
    """Set transferlab's process-wide settings, once: Keras on the JAX backend, one XLA CPU
    device per core (`TRANSFERLAB_CPU_DEVICES` to change), and the persistent compile cache
    (`TRANSFERLAB_CACHE_DIR`; "off" disables it). The CLI calls it; Python users call
    `transferlab.configure()` before their first study for the same speed. Importing a
    transferlab module never does this. Raises `BackendError` for a forced other backend."""
    global _configured
    if _configured:
        return
    _check_keras_backend()
    _split_cpu_into_devices()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _configured = True
    _enable_compilation_cache()
