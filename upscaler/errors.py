"""The one family of errors a user can act on.

The CLI prints `Error: <message>` and, when there is one, `Hint: <hint>`, then exits 1.
Library code raises these and never prints or exits.
"""

from __future__ import annotations


class UpscaleError(Exception):
    """An error with a message a person can act on, and an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # Pickled with its hint, as it travels back from a cluster's worker. A subclass built from other
        # arguments (a pipeline's StageError) travels as the base class, with the same message and hint.
        kind = type(self) if type(self).__init__ is UpscaleError.__init__ else UpscaleError
        return (kind, (self.message, self.hint))


class ModelError(UpscaleError):
    """A model id, a weights file or an architecture that cannot be used."""


class BackendError(UpscaleError):
    """A backend that is unknown, cannot run here, or failed while running."""


class InputError(UpscaleError):
    """An input file that cannot be read, or an option value that does not fit it."""


class OutputError(UpscaleError):
    """An output that cannot or must not be written."""


class OutOfMemory(BackendError):
    """A backend ran out of memory on a batch; the caller may retry with smaller tiles."""
