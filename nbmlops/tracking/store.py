"""Moved to :mod:`nbmlops.backend.store`; this path lives only until the modules other work holds open import
the new one (runner/sweep.py, cli.py)."""

from nbmlops.backend.store import TASK_TAG, open_store

__all__ = ["TASK_TAG", "open_store"]
