"""Data fingerprints, profiles and MLflow schemas.

Importing this package is cheap: pandas, numpy and pyarrow are imported only when a function
is called. The functions share their modules' names, so ``nbmlops.data.fingerprint`` is the
function, not the module.
"""

from nbmlops.data.fingerprint import fingerprint
from nbmlops.data.profile import mlflow_schema, profile

__all__ = ["fingerprint", "mlflow_schema", "profile"]
