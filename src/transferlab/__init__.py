"""transferlab: does reusing a network trained on a related problem help, and which way is best?"""

from transferlab import _backend

_backend.configure()

__version__ = "0.1.0"
