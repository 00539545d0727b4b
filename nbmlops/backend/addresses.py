"""Where records go: the tracking stores a deliverer may write to, by the form its journals name them.

A journal never holds a store's credentials: a start record names its store redacted (``http://***@host``).
A deliverer is given the real URIs it may write to (:class:`StoreAddresses`); one not given any takes them from
its own process's settings and environment (``NBMLOPS_TRACKING_URI``, ``MLFLOW_TRACKING_URI``, the project's
configuration), so a replay in another process needs no step of its caller. A journal naming a store with
credentials that none of those spell is not delivered (:class:`StoreUnavailableError`, the records stay in the
journal) rather than sent without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from nbmlops.backend.store import Store, open_store
from nbmlops.config import resolve_settings
from nbmlops.exceptions import ConfigError, StoreUnavailableError
from nbmlops.redact import redact_uri

__all__ = ["StoreAddresses"]

_ENVIRONMENT = ("NBMLOPS_TRACKING_URI", "MLFLOW_TRACKING_URI")


class StoreAddresses:
    """Real tracking URIs by the redacted form that records name them by (kept in memory only)."""

    def __init__(self, uris: Iterable[str] = ()) -> None:
        self._real: dict[str, str] = {}
        for uri in uris:
            self.add(uri)

    @classmethod
    def from_environment(cls, *uris: str, root: Path | None = None) -> StoreAddresses:
        """``uris``, and the tracking URIs this process's settings (of the project at ``root``, else the current
        one) and environment name."""
        found = list(uris)
        try:
            found.append(resolve_settings(root).tracking_uri)
        except ConfigError:
            pass  # a bad setting elsewhere: the environment's URIs may still do
        found += [os.environ[name] for name in _ENVIRONMENT if os.environ.get(name)]
        return cls(found)

    def add(self, uri: str) -> str:
        """Know ``uri``; returns the form a record may name it by (its credentials redacted)."""
        shown = redact_uri(uri)
        self._real.setdefault(shown, uri)
        return shown

    def real(self, shown: str) -> str:
        """The real URI of the store a record names as ``shown``.

        Raises:
            StoreUnavailableError: ``shown`` hides credentials that no URI given here holds.
        """
        if shown in self._real:
            return self._real[shown]
        if redact_uri(shown) == shown and "***" not in shown:
            return shown  # nothing was hidden from it
        raise StoreUnavailableError(
            shown,
            "its credentials are not written in journals, and this process's settings name no such store: set "
            "NBMLOPS_TRACKING_URI (or MLFLOW_TRACKING_URI) to it, with its credentials, then run `nbmlops sync`",
        )

    def open(self, shown: str, artifact_root: str | None) -> Store:
        """The store a record names as ``shown``."""
        return open_store(self.real(shown), artifact_root)
