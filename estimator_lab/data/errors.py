"""The errors of `estimator_lab.data` and the one-line messages they carry.

Every failure a user sees is an `MNISTError` with a one-line message. `BadData` is internal: it
says what is wrong with a source without saying which source, and callers turn it into an
`MNISTError` that names the file.
"""

from __future__ import annotations


class MNISTError(RuntimeError):
    """One-line, user-facing error about MNIST data; `str(e)` is the message."""


class BadData(Exception):
    """Internal: what is wrong with a source, without saying which source (callers add that)."""


def one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def describe_exc(exc: BaseException) -> str:
    """`TypeName: message` on one line (the bare type name if the message is empty)."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
