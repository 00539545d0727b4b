"""Registering a trained model: staged in the user's process, created in the registry by the delivery.

A registration goes through the journal like every other record, so it survives a store that is down
and a kernel that dies, and a headless kernel never imports mlflow: the model is staged on the user's
thread (:mod:`nbmlops.tracking.staging`), and the delivery (this process's writer, ``nbmlops run`` for headless
kernels, or ``nbmlops sync``) logs it in the MLflow flavor of its library and creates the registry version with
its lineage as tags, once (:func:`nbmlops.backend.models.deliver_model`). Every later load checks the logged
model's SHA-256 (:mod:`nbmlops.registry.safe_load`).
"""

from __future__ import annotations

from typing import Any

from nbmlops.backend import registry as mlflow_registry
from nbmlops.config import resolve_settings
from nbmlops.registry.models import (
    REGISTRATION_KEY_TAG,
    ModelVersionInfo,
    RegistryError,
    _quote,
    check_model_name,
    registry_client,
    version_info,
)
from nbmlops.tracking.staging import UnsupportedModelError, check_model, features_of, stage_model

__all__ = ["UnsupportedModelError", "find_registration", "register"]


def register(
    model: Any,
    name: str,
    *,
    training_data: Any = None,
    evaluation_data: Any = None,
    wait: bool = True,
    timeout: float | None = None,
) -> ModelVersionInfo | None:
    """Register ``model`` as a new version of ``name``, with its lineage.

    The version belongs to the active run (``with nbmlops.track():`` or a ``%%track`` cell); with none
    active, a run named ``register <name>`` is recorded for it. The model is logged in the MLflow flavor of
    its library (found from its type, without importing the library): scikit-learn estimators and pipelines
    (also with an XGBoost, LightGBM or CatBoost final step) with skops, XGBoost models as JSON, a LightGBM Booster
    as its text model and LightGBM's scikit-learn wrappers with skops, CatBoost models as cbm, statsmodels results and a
    ``mlflow.pyfunc.PythonModel`` as MLflow pickles them (loaded later only when trusted:
    :mod:`nbmlops.registry.safe_load`); ``training_data`` (the features it was fitted on:
    a DataFrame or array) gives its signature and input example, and is fingerprinted and logged as
    the run's training dataset, as ``evaluation_data`` is as its evaluation dataset. Without them, the
    datasets the run logged with the context ``training`` (``nbmlops.log_dataset(X, "X_train",
    context="training")``, or the training data a ``%%track`` cell reads) and ``evaluation`` are the
    version's lineage, and the one of them the model was fitted on gives the signature and input example.

    Returns the new version once it is in the registry (waiting up to ``timeout`` seconds), or None
    with ``wait=False``, in a kernel run headlessly by ``nbmlops run`` (whose runner registers it),
    inside a ``%%track`` cell (the version is created when the cell ends, with the run's git state), and
    in a notebook ``nbmlops reproduce`` re-executes without ``--register`` (nothing is registered then).

    Raises:
        ModelReferenceError: a name MLflow would refuse.
        UnsupportedModelError: not a model of a library nbmlops registers (the message names its type).
        FlushTimeoutError: the registry did not answer within ``timeout``.
        RegistryError: the store refused the registration.
    """
    from nbmlops.exceptions import TrackingError
    from nbmlops.tracking.run import Run, active_run, end_for

    check_model_name(name)
    check_model(model)
    try:
        run, own = active_run(), False
    except TrackingError:  # no run active: record one for the registration
        run, own = Run(f"register {name}", tags={"nbmlops.kind": "model"}), True
        run.start()
    error: BaseException | None = None
    try:
        features = training_data
        if training_data is not None:
            training = {"training_data": run.log_dataset(training_data, "training_data", context="training")}
        else:  # the data the run logged as training data (nbmlops.log_dataset(..., context="training"))
            training = _logged(run, "training")
            fitted_on = features_of(model, run.training_data())
            features = fitted_on[1] if fitted_on else None
        if evaluation_data is not None:
            evaluation = {"evaluation_data": run.log_dataset(evaluation_data, "evaluation_data", context="evaluation")}
        else:
            evaluation = _logged(run, "evaluation")
        key = stage_model(model, name, run, features=features, training=training, evaluation=evaluation)
    except BaseException as exc:
        error = exc
        raise
    finally:
        if own:
            end_for(run, error)
    session = run.session
    if key is None or not wait or session.handoff or session.holding:
        return None
    session.flush(timeout)
    found = find_registration(name, key)
    if found is None:
        raise RegistryError(
            f"the registry refused model {name!r} (see the warning above and "
            f"{resolve_settings().journal_dir / 'refused.jsonl'})"
        )
    return found


def _logged(run: Any, context: str) -> dict[str, str]:
    """``{name: fingerprint}`` of the datasets ``run`` logged with ``context``."""
    return {n: run.datasets[n] for n, c in run.contexts.items() if c == context and n in run.datasets}


def find_registration(name: str, key: str, client: Any = None) -> ModelVersionInfo | None:
    """The version created for registration ``key`` of model ``name``, if it exists yet."""
    client = client or registry_client()
    found = mlflow_registry.search_versions(client, f"name = '{_quote(name)}' and tags.`{REGISTRATION_KEY_TAG}` = '{key}'")
    return version_info(client, found[0]) if found else None
