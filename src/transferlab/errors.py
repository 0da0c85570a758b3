"""One family of exceptions: every refusal transferlab makes is a `TransferlabError`.

Callers (the CLI, a notebook, a pipeline) catch the base class; each subclass says which
input it concerns, and its message names the file, field, row, value or layer and what to
do. Each subclass also derives from the built-in error it has always been (`ValueError`
for bad input values, `RuntimeError` for a folder, cluster or backend), so code written
against those keeps working. Anything else escaping transferlab is a bug.
"""

from __future__ import annotations


class TransferlabError(Exception):
    """Base class of every refusal; `field` names the input field at fault, when one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StudyFileError(TransferlabError, ValueError):
    """A study file (or study dictionary) that cannot be run.

    The message starts with the file and the dotted field (`study.toml: training.epochs: ...`).
    """


class TaskError(TransferlabError, ValueError):
    """Task data that cannot be trained on; the message says what to fix."""


class DataError(TaskError):
    """A dataset option or data file that cannot make a task.

    `field` names the option at fault (`path`, `target`, `classes`, ...), so a study file's
    message can name the field.
    """


class ModelFileError(TransferlabError, ValueError):
    """A model file, Keras model or layer list that transferlab cannot train exactly.

    The message names the file and the layer.
    """


class StrategyError(TransferlabError, ValueError):
    """A strategy that cannot apply to this source model or task.

    `field` (also `parameter`) names the parameter at fault.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message, parameter)

    @property
    def parameter(self) -> str | None:
        """The strategy parameter at fault (the same as `field`)."""
        return self.field


class ExtensionError(TransferlabError, ImportError):
    """An extension that is not installed here, or that breaks its contract.

    The message names the strategy or layer type, its module and version, and what to do.
    """


class StoreError(TransferlabError, RuntimeError):
    """An output folder's database that this study must not overwrite, or that cannot be read.

    Nothing stored is changed.
    """


class FolderError(TransferlabError, RuntimeError):
    """The output folder cannot be used; the message says why and what to do."""


class ClusterError(TransferlabError, RuntimeError):
    """No Ray cluster answers at the address given: start one, or run locally."""


class BackendError(TransferlabError, RuntimeError):
    """Keras is forced onto a backend transferlab cannot train with."""


class ScoreInputError(TransferlabError, ValueError):
    """Arrays a transferability score cannot score (`transferlab.scores`).

    The message names the argument (`features`, `labels`, `source_probs`), the row or
    class at fault, and what to give instead.
    """
