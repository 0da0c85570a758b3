"""transferlab: does reusing a network trained on a related problem help, and which way is best?

Importing it changes nothing in the process. `transferlab.configure()` (the CLI calls it)
puts Keras on the JAX backend, gives XLA one CPU device per core and turns on the
persistent compile cache; call it before the first study.
"""

from transferlab._backend import configure
from transferlab.tasks import Task

__all__ = ["Task", "configure", "results"]


def results(folder):
    """Every table of an output folder (study, sweep or matrix) as pandas DataFrames:
    `runs`, `curves`, `summary`, `learning_speed`, `points` (see `transferlab.frames`)."""
    from transferlab.frames import results as read

    return read(folder)
__version__ = "0.1.0"
