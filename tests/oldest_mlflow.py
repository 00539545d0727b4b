"""The oldest MLflow release nbmlops supports, as a second environment: built (or reused) in ``.venv-oldest/``
with that release and nbmlops installed from this checkout, then a smoke subset of the suite run in it.

Run as a script by :mod:`tests.conftest` in the background while the main suite runs (its output goes to the file
named by the first argument); ``tests/test_oldest_mlflow.py`` waits for it and reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-oldest"
#: the part of the suite that exercises every MLflow call nbmlops makes in tracking, search and the dashboard
SMOKE = ["tests/test_search.py", "tests/test_api.py", "tests/test_offline_sync.py", "tests/test_widgets.py"]


def oldest_release() -> str:
    """``3.10`` from ``mlflow>=3.10,<4`` in pyproject.toml."""
    found = re.search(r'"mlflow>=([0-9]+\.[0-9]+)', (ROOT / "pyproject.toml").read_text())
    if found is None:
        raise SystemExit("pyproject.toml names no lower bound for mlflow")
    return found.group(1)


def main() -> int:
    release = oldest_release()
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    installed = subprocess.run([str(python), "-c", "import mlflow; print(mlflow.__version__)"],
                               capture_output=True, text=True, check=False).stdout.strip()
    if not installed.startswith(release + "."):
        # as a user would: MLflow is there first, then nbmlops is installed into that environment and must keep it
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"mlflow~={release}.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True)
    version = subprocess.run([str(python), "-c", "import mlflow; print(mlflow.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not version.startswith(release + "."):
        print(f"installing nbmlops replaced mlflow {release}.x with {version}", flush=True)
        return 1
    print(f"smoke tests on mlflow {version}", flush=True)
    return subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE], cwd=ROOT,
                          check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
