"""Pin Keras to the JAX backend and give XLA one CPU device per core.

Must run before `jax` or `keras` is imported anywhere, so `engine` and `models` call
`configure()` before they import either; it runs once. Users who force another backend get a clear error instead of a
silently slower, different engine.
"""

from __future__ import annotations

import os
import sys


class BackendError(RuntimeError):
    """Keras is forced onto a backend transferlab cannot train with."""


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


def _split_cpu_into_devices() -> None:
    """One XLA host device per core: the engine shards models across them to use every core."""
    if "jax" in sys.modules:
        return  # too late to change; the engine uses whatever devices exist
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = max(1, min(int(os.environ.get("TRANSFERLAB_CPU_DEVICES", cores or 1)), 64))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _enable_compilation_cache() -> None:
    """Keep compiled engine programs on disk so the next process skips XLA compilation."""
    import jax

    cache = os.environ.get("TRANSFERLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transferlab", "xla"
    )
    if cache.lower() in ("0", "off", "none"):
        return
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        return  # read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


_configured = False


def configure_environment() -> None:
    """The environment variables only (Keras backend, XLA devices): no import, so it is
    instant; `import transferlab` calls it, so `import transferlab; import keras` gets JAX.
    A backend forced elsewhere is left for `configure` to report (as one line in the CLI)."""
    try:
        _check_keras_backend()
    except BackendError:
        return
    _split_cpu_into_devices()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure() -> None:
    """The environment, then JAX and its compile cache (once; the engine and models call it)."""
    global _configured
    if _configured:
        return
    _check_keras_backend()  # raises BackendError: a backend forced elsewhere
    configure_environment()
    _configured = True
    import jax  # noqa: F401  (initialise after the flags are set)

    _enable_compilation_cache()
