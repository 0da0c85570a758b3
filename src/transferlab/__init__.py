"""transferlab: does reusing a network trained on a related problem help, and which way is best?

Importing the package only sets environment variables (Keras on the JAX backend, one XLA
CPU device per core), so `import transferlab; import keras` trains on JAX; JAX itself and
the compile cache are set up when `engine` or `models` is first imported
(`transferlab._backend`).
"""

from transferlab import _backend

_backend.configure_environment()

__version__ = "0.1.0"
