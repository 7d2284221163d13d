"""degrade: the degradation problem of deep plain networks, and how residual connections fix it.

From Python: ``degrade.open("outputs").sweep().metrics()`` (see ``degrade.results``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from degrade.results import Store

from degrade.version import __version__

__all__ = ["__version__", "open"]


def open(path: str | Path = "outputs") -> Store:  # noqa: A001 - the name pandas/xarray users expect
    """The run store at ``path`` as tidy DataFrames: ``degrade.open("outputs").sweep().metrics()``.

    Imported on first call, so ``import degrade`` (and every worker that imports a module of the
    package) stays as light as before.
    """
    from degrade.results import open_store

    return open_store(path)
