"""Reading `.pt` files without running anything they hold.

`torch.load(weights_only=True)` builds only tensors, plain containers (dict, list, tuple, str,
numbers, `None`) and the classes named in `allowed`; a file that refers to anything else (a
pickled object whose loading would call a function, e.g. a shell command) is refused before
any of it is built. `safe_load` turns that refusal, and a missing or corrupt file, into one
`ValueError` line that names the file, for the command line's usual one-line error. Every
`.pt` file the package reads (checkpoints, run folders, parameter files, partials) goes
through it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch


def safe_load(path: str | Path, *, what: str = "file", map_location: Any = "cpu",
              allowed: tuple[type, ...] = ()) -> Any:
    """The object saved in `path`, built from tensors, plain containers and `allowed` only.

    Args:
        path: a file written by `torch.save`.
        what: what the file should be, for the message (e.g. `"checkpoint"`).
        map_location: where tensors are put (`torch.load`'s argument).
        allowed: classes the file may hold besides tensors and plain containers.

    Returns:
        the saved object.

    Raises:
        ValueError: one line, if the file is missing, a folder, corrupt, or refers to anything
            not allowed (nothing in the file has been run).

    Example:
        >>> import fractions, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.pt")
        >>> torch.save({"w": torch.ones(2)}, path)
        >>> safe_load(path)
        {'w': tensor([1., 1.])}
        >>> torch.save({"w": fractions.Fraction(1, 3)}, path)
        >>> safe_load(path)
        Traceback (most recent call last):
        ...
        ValueError: file .../x.pt refers to fractions.Fraction, which no file of this ...
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a folder, not a file") from None
    except pickle.UnpicklingError as error:
        name = re.search(r"GLOBAL ([\w.]+)", str(error))
        if name is None:
            raise ValueError(f"{what} {path} is not a readable torch.save file "
                             f"({_first_line(error)})") from None
        raise ValueError(f"{what} {path} refers to {name.group(1)}, which no file of this "
                         "package holds; it was not loaded and nothing in it was run: move the "
                         "file away") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError) as error:
        raise ValueError(f"{what} {path} is not a readable torch.save file "
                         f"({_first_line(error)})") from None


def safe_load_dict(path: str | Path, what: str) -> dict:
    """`safe_load` of a file that must hold a dict.

    Raises:
        ValueError: as `safe_load`, or one line if the file holds something else.
    """
    state = safe_load(path, what=what)
    if not isinstance(state, dict):
        raise ValueError(f"{what} {path} holds a {type(state).__name__}, not a dict")
    return state


def _first_line(error: BaseException) -> str:
    """The first sentence of `error`'s message (its type name if it has none), at most 200
    characters."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].split(". ")[0][:200] if lines else type(error).__name__
