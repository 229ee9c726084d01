"""Exceptions that carry a one-line, user-facing reason.

The CLI turns `InputError` into exit code 2 and `ModelUnavailableError` into
exit code 1, printing only the message (never a traceback).
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class for errors whose message is meant for the user as is."""


class InputError(WorkbenchError, ValueError):
    """Bad user input: a file, a line or a field that cannot be used.

    The message names the file and line when there is one:
    ``prompts.jsonl:7: field 'text' is missing``.
    """

    def __init__(self, problem: str, path: str | None = None, line: int | None = None):
        self.problem, self.path, self.line = problem, path, line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + problem)


class HookNameError(InputError):
    """A hook name or pattern that matches no hook point of the model."""


class ModelUnavailableError(WorkbenchError, RuntimeError):
    """A model's weights could not be found; the message says what was tried and how to fix it."""


class CacheTooLargeError(WorkbenchError, MemoryError):
    """An in-memory activation cache that would not fit; the message gives the estimate."""


class TokenizationWarning(UserWarning):
    """A prompt or answer was tokenised as given, but probably not as meant (one line)."""


def first_line(error: Exception, limit: int = 200) -> str:
    """The first line of a library's error message, cut at `limit` characters (a store's or
    Transformers' messages can run to a kilobyte), for a one-line error of our own."""
    line = (str(error).splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
