"""Data fingerprints, profiles, MLflow schemas, content-addressed snapshots (and their gc), diffs and drift.

Importing this package is cheap: pandas, numpy, pyarrow and scipy are imported only when a
function is called. The functions share their modules' names, so ``nbmlops.data.fingerprint``
is the function, not the module.
"""

from nbmlops.data.diff import diff_frames, diff_profiles, format_diff
from nbmlops.data.drift import DriftError, DriftReport, FeatureDrift, compare, compare_predictions, psi
from nbmlops.data.fingerprint import fingerprint
from nbmlops.data.gc import GcReport, gc
from nbmlops.data.profile import mlflow_schema, profile
from nbmlops.data.snapshots import CorruptSnapshotError, SnapshotStore, UnsupportedSnapshotError, load

__all__ = [
    "CorruptSnapshotError",
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "GcReport",
    "SnapshotStore",
    "UnsupportedSnapshotError",
    "compare",
    "compare_predictions",
    "diff_frames",
    "diff_profiles",
    "fingerprint",
    "format_diff",
    "gc",
    "load",
    "mlflow_schema",
    "profile",
    "psi",
]
