"""The one door to MLflow: every mlflow import and every MLflow client call of nbmlops is in this package.

:mod:`~nbmlops.backend.store` opens a tracking store (sqlite schema, HTTP budgets, credentials) and classifies
what goes wrong into nbmlops' errors (an ``MlflowException`` never leaves this package);
:mod:`~nbmlops.backend.records` delivers journaled records through a table of handlers by record kind;
:mod:`~nbmlops.backend.models` logs, reads and describes models. Only public MLflow API is called.
The backend imports nothing above it: the run lifecycle (:mod:`nbmlops.tracking`), the registry's decisions
(:mod:`nbmlops.registry`) and the adapters call down into it. mlflow is imported inside the functions.
"""
