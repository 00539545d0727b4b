"""The one door to MLflow: every mlflow import and every MLflow client call of nbmlops is in this package.

- :mod:`~nbmlops.backend.store`: a tracking store opened (HTTP health probe, credentials), the budget of every
  call, and what MLflow raises classified into nbmlops' errors (an ``MlflowException`` never leaves the
  backend); runs found again by their key; :mod:`~nbmlops.backend.sqlite_schema`: a local sqlite store made
  safely by several processes; :mod:`~nbmlops.backend.addresses`: which stores a deliverer may write to.
- :mod:`~nbmlops.backend.delivery_process`: a kernel's records applied by a child process of its own, off the
  kernel's GIL (the same store code, each call one request over a private pipe);
- :mod:`~nbmlops.backend.records`: journaled records applied through a table of handlers by record kind;
  :mod:`~nbmlops.backend.models`: a registration delivered (MLflow's scikit-learn flavor), model files read.
- :mod:`~nbmlops.backend.runs`, :mod:`~nbmlops.backend.registry`: the reads and searches of runs, the registry's
  calls; :mod:`~nbmlops.backend.snapshot_remote`, :mod:`~nbmlops.backend.snapshot_refs`: data snapshots in the
  MLflow artifact store.

Only public MLflow API is called, but for one thing it lacks: deleting artifacts (``nbmlops data gc`` removing
shared snapshots goes through MLflow's artifact repository, :mod:`~nbmlops.backend.snapshot_refs`). The backend imports nothing above it: the run lifecycle
(:mod:`nbmlops.tracking`), the registry's decisions (:mod:`nbmlops.registry`) and the adapters call down into it
(``tests/test_architecture.py`` checks the import graph). mlflow is imported inside the functions.
"""
