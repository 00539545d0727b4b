"""Finding the experiments of model servers and of their monitoring: every active experiment whose name starts
with a prefix (``serve/``, ``monitor/``), all pages of MLflow's experiment search."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbmlops.backend.store import Store

__all__ = ["experiments_under"]

_PAGE = 1000


def experiments_under(store: Store, prefix: str) -> list[tuple[str, str]]:
    """``(id, name)`` of every active experiment of ``store`` whose name starts with ``prefix`` (letters, digits
    and ``/`` only: it is put in a ``LIKE`` pattern), by name."""
    if not prefix.replace("/", "").isalnum():
        raise ValueError(f"experiment prefix {prefix!r}: letters, digits and / only")
    found: list[tuple[str, str]] = []
    token: str | None = None
    while True:
        page = store.client.search_experiments(filter_string=f"name LIKE '{prefix}%'", max_results=_PAGE,
                                               page_token=token)
        found += [(e.experiment_id, e.name) for e in page if e.name.startswith(prefix)]
        token = page.token
        if not token:
            return sorted(found, key=lambda item: item[1])
