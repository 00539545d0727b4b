"""Serving runs and their traffic datasets in the store (see :mod:`nbmlops.serving.recorder`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.backend.store import Store

__all__ = ["read_frames"]


def read_frames(store: Store, name: str, alias: str | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The traffic and feedback rows of the serving runs of ``name`` (of ``alias`` when given), and those runs."""
    raise NotImplementedError


def _unused(value: Any) -> Any:
    return value
