"""MLflow's model registry as nbmlops calls it: versions, registered models, aliases, tags.

``client`` is the backend's client of a store (:attr:`nbmlops.backend.store.Store.client`): every call is
bounded by the call budget and raises nbmlops' errors, never MLflow's (:class:`RecordRejected` carries MLflow's
code: ``RESOURCE_DOES_NOT_EXIST``, ``RESOURCE_ALREADY_EXISTS``, ...). Versions and models come back as MLflow's
entities; :mod:`nbmlops.registry.models` reads them into its own types. A call the server refuses the user
(:class:`PermissionRefused`) names the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nbmlops.backend.identity import naming
from nbmlops.exceptions import PermissionRefused

__all__ = [
    "all_registered_models", "all_versions", "create_registered_model", "delete_registered_model",
    "get_registered_model", "get_run", "runs_with_dataset", "search_versions", "set_alias", "set_version_tag",
    "version", "version_by_alias",
]

_PAGE = 1000
_MODEL = "registered model"


def version(client: Any, name: str, number: int) -> Any:
    """Version ``number`` of model ``name``."""
    with naming(_MODEL, name):
        return client.get_model_version(name, str(number))


def version_by_alias(client: Any, name: str, alias: str) -> Any:
    """The version of model ``name`` that ``alias`` points to."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except PermissionRefused as refused:  # the same endpoint as setting an alias, read with GET
        raise PermissionRefused(refused.uri, refused.user, "read", "READ", _MODEL, name) from None


def search_versions(client: Any, filter_string: str, limit: int | None = None, newest_first: bool = False) -> list[Any]:
    """The versions a registry filter finds (one page of at most ``limit``; MLflow's default page without one)."""
    options: dict[str, Any] = {} if limit is None else {"max_results": limit}
    if newest_first:
        options["order_by"] = ["version_number DESC"]
    return list(client.search_model_versions(filter_string, **options))


def all_versions(client: Any, filter_string: str) -> Iterator[Any]:
    """Every version a registry filter finds, page after page."""
    token = None
    while True:
        page = client.search_model_versions(filter_string, max_results=_PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def get_registered_model(client: Any, name: str) -> Any:
    """Registered model ``name`` (its aliases, tags, latest versions)."""
    with naming(_MODEL, name):
        return client.get_registered_model(name)


def all_registered_models(client: Any) -> Iterator[Any]:
    """Every registered model, page after page."""
    token = None
    while True:
        page = client.search_registered_models(max_results=_PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def create_registered_model(client: Any, name: str, tags: Mapping[str, str] | None = None,
                            description: str | None = None) -> None:
    """Create registered model ``name`` (atomic in every MLflow store: a second create is RESOURCE_ALREADY_EXISTS)."""
    with naming(_MODEL, name):
        client.create_registered_model(name, tags=dict(tags or {}), description=description)


def delete_registered_model(client: Any, name: str) -> None:
    """Delete registered model ``name`` and its versions."""
    with naming(_MODEL, name):
        client.delete_registered_model(name)


def set_alias(client: Any, name: str, alias: str, number: int) -> None:
    """Point ``alias`` of model ``name`` at version ``number``."""
    with naming(_MODEL, name):
        client.set_registered_model_alias(name, alias, str(number))


def set_version_tag(client: Any, name: str, number: int, key: str, value: str) -> None:
    """Set tag ``key`` of version ``number`` of model ``name``."""
    with naming(_MODEL, name):
        client.set_model_version_tag(name, str(number), key, value)


def get_run(client: Any, run_id: str) -> Any:
    """MLflow's ``Run`` of ``run_id`` (a version's source run)."""
    return client.get_run(run_id)


def runs_with_dataset(client: Any, digest: str, limit: int = 200) -> list[Any]:
    """The runs of any active experiment that logged a dataset with fingerprint ``digest`` (at most ``limit`` per
    50 experiments)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    found: list[Any] = []
    for start in range(0, len(experiments), 50):
        found += client.search_runs(experiments[start:start + 50], filter_string=f"dataset.digest = '{digest}'",
                                    max_results=limit)
    return found
