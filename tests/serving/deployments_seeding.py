"""Serving and monitoring runs written with MLflow's client exactly as the serving design records them (tags
``nbmlops.serve.*``, summary metrics with step = delivery number; monitoring runs in ``monitor/NAME`` carrying
``nbmlops.drifted``), for the Deployments view's tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

#: what a server that answered 200 requests, 4 of them errors, records
FIGURES = {"requests": 200.0, "errors": 4.0, "error_rate": 0.02, "latency_p50_ms": 3.25, "latency_p95_ms": 11.5,
           "latency_p99_ms": 19.0, "unlogged": 0.0}


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def ago(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def seed_serving_run(client, model: str, alias: str = "champion", *, url: str, version: int = 1,
                     status: str = "RUNNING", heartbeat: datetime | None = None, since: datetime | None = None,
                     last_swap: tuple[datetime, int, int] | None = None, shadow: str | None = None,
                     figures: Mapping[str, float] | None = None, deliveries: int = 2, pid: int = 4242) -> str:
    """A serving run of ``model@alias`` at ``url`` in experiment ``serve/<model>``; its summary metrics end at
    ``figures`` (step = delivery number); ``status`` RUNNING leaves it open, else it is ended so. Returns its id."""
    address = urlparse(url)
    started = since or ago(600)
    tags = {
        "nbmlops.kind": "serve", "nbmlops.serve.model": model, "nbmlops.serve.alias": alias,
        "nbmlops.serve.url": url, "nbmlops.serve.version": str(version), "nbmlops.serve.since": iso(started),
        "nbmlops.serve.heartbeat": iso(heartbeat or datetime.now(timezone.utc)), "nbmlops.serve.pid": str(pid),
        "nbmlops.serve.host": address.hostname or "",
    }
    if last_swap is not None:
        at, previous, current = last_swap
        tags["nbmlops.serve.last_swap"] = f"{iso(at)} v{previous} -> v{current}"
    if shadow:
        tags["nbmlops.serve.shadow"] = shadow
    run = client.create_run(experiment(client, f"serve/{model}"), run_name=f"serve {model}@{alias} {address.netloc}",
                            tags=tags, start_time=int(started.timestamp() * 1000))
    final = dict(FIGURES if figures is None else figures)
    for step in range(1, deliveries + 1):  # cumulative figures: each delivery's are the final ones so far
        for key, value in final.items():
            share = step / deliveries
            shown = value * share if key in ("requests", "errors", "unlogged") else value
            client.log_metric(run.info.run_id, key, shown, step=step)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def seed_monitor_run(client, model: str, version: int, *, drifted: bool, alias: str = "champion",
                     traffic: bool = True) -> str:
    """A finished monitoring run of ``model`` version ``version`` (experiment ``monitor/<model>``), drifted or not,
    on its live traffic as ``nbmlops monitor NAME@ALIAS --traffic`` records it (else on a data file). Returns its
    id."""
    tags = {"nbmlops.kind": "monitor", "nbmlops.model": model, "nbmlops.model_version": str(version),
            "nbmlops.drifted": str(drifted).lower(),
            "nbmlops.monitored_data": f"traffic of {model}@{alias}" if traffic else "live.csv"}
    if traffic:
        tags |= {"nbmlops.traffic.runs": "seeded", "nbmlops.traffic.since": "24h"}
    run = client.create_run(experiment(client, f"monitor/{model}"), run_name=f"monitor {model}/{version}", tags=tags)
    client.log_metric(run.info.run_id, "drift.max_psi", 0.9 if drifted else 0.01)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
