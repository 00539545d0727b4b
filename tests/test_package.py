"""The package surface: light to import, a pinned public API, HTML that escapes user strings."""

from __future__ import annotations

import subprocess
import sys

import nbmlops
from nbmlops.tracking.summary import Summary


def test_public_api_is_pinned():
    assert nbmlops.__all__ == [
        "__version__",
        "active_run",
        "configure",
        "dashboard",
        "fingerprint",
        "flush",
        "load_ipython_extension",
        "log_dataset",
        "log_metric",
        "log_metrics",
        "log_param",
        "log_params",
        "promote",
        "register",
        "serve",
        "set_tags",
        "track",
        "unload_ipython_extension",
    ]
    assert all(hasattr(nbmlops, name) for name in nbmlops.__all__)


def test_import_and_load_ext_import_no_mlflow_pandas_or_sklearn(tmp_path):
    code = (
        "import sys, nbmlops\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'nbmlops')\n"
        "print(sorted(m for m in ('mlflow', 'pandas', 'sklearn', 'papermill') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_summary_html_escapes_every_user_string():
    evil = "<img src=x onerror=alert(1)>"
    summary = Summary(
        name=evil,
        experiment=evil,
        status="FINISHED",
        duration_s=0.1,
        params={evil: evil},
        metrics={evil: 1.0},
        datasets={evil: "0" * 32},
        url='http://x/"><script>alert(1)</script>',
    )
    html = summary.to_html()
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert evil in summary.to_text()
