"""The jupyter_server extension: a REST API under ``/nbmlops/api/`` for the JupyterLab sidebar.

Enabled on install by ``jupyter-config/server-config/nbmlops.json`` (installed into
``etc/jupyter/jupyter_server_config.d/``); jupyter_server finds this module through
:func:`nbmlops._jupyter_server_extension_points`. Loading it registers the handlers of
:mod:`nbmlops.server.handlers` and the MLflow UI at ``<base_url>mlflow/`` (:mod:`nbmlops.server.ui_proxy`, started
on first request) and nothing else: mlflow and papermill are imported on first use.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["API_PREFIX"]

API_PREFIX = "nbmlops/api"
_THREADS = 4


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the API's handlers to the server, with a job manager and a thread pool of their own. Headless jobs
    outlive the server: the next one on the same root lists them (see :mod:`nbmlops.server.jobs`)."""
    from jupyter_server.utils import url_path_join

    from nbmlops.server.handlers import routes
    from nbmlops.server.jobs import JobManager

    web_app = serverapp.web_app
    jobs = JobManager(Path(web_app.settings["server_root_dir"]))
    executor = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="nbmlops")
    web_app.settings["nbmlops_jobs"] = jobs
    web_app.settings["nbmlops_executor"] = executor
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base_url, API_PREFIX, pattern), handler) for pattern, handler in routes()]
    )
    serverapp.log.info("nbmlops: API at %s", url_path_join(base_url, API_PREFIX))
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        serverapp.log.warning("nbmlops: jupyter-server-proxy is not installed, so Jupyter does not serve the MLflow UI "
                              "(pip install jupyter-server-proxy); run links point to `nbmlops ui`'s address")
    else:
        from nbmlops.server.ui_proxy import serve_mlflow_ui

        serve_mlflow_ui(serverapp)
