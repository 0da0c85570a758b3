"""transferlab: does reusing a network trained on a related problem help, and which way is best?

Importing the package changes nothing; the modules that use JAX or Keras (`engine`,
`models`, and everything built on them) pin Keras to the JAX backend before they import
it (`transferlab._backend`)."""

__version__ = "0.1.0"
