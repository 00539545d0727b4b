"""The errors of a sweep that cannot start as asked."""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError

__all__ = ["DaskNotInstalledError", "SchedulerUnavailableError", "SweepError"]


class SweepError(NbmlopsError, ValueError):
    """A sweep that cannot start as asked (malformed grid, clashing options, a store Dask cannot reach)."""


class DaskNotInstalledError(SweepError):
    """``dask=`` was given but ``distributed`` is not installed."""

    def __init__(self) -> None:
        super().__init__('running a sweep on Dask needs Dask: pip install "dask[distributed]"')


class SchedulerUnavailableError(NbmlopsError):
    """The Dask scheduler given as ``dask=`` could not be reached."""
