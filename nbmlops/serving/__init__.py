"""Serving a registered model over MLflow's scoring server: ``nbmlops serve NAME@ALIAS`` follows the alias, logs
the traffic, exposes Prometheus metrics, takes feedback and shadow-scores with a second alias.

``serve`` and ``ServingHandle`` are imported on first use, so that the modules a serving process needs (the traffic
log, say) can be imported alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.serving.deployments import Deployment, list_deployments
    from nbmlops.serving.server import ServingHandle, serve

__all__ = ["Deployment", "ServingHandle", "list_deployments", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("ServingHandle", "serve"):
        from nbmlops.serving import server

        return getattr(server, name)
    if name in ("Deployment", "list_deployments"):
        from nbmlops.serving import deployments

        return getattr(deployments, name)
    raise AttributeError(f"module 'nbmlops.serving' has no attribute {name!r}")
