"""`nbmlops data gc`: snapshots that runs, registered model versions or the retention window need are kept,
the rest is deleted (here and from the MLflow artifact store); a dry run deletes nothing; a snapshot re-used
while gc runs is kept. A real sqlite MLflow store, real runs, a real registered model version."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.backend.snapshot_refs import BY_RUNS, BY_VERSIONS, MlflowSnapshotFiles, snapshot_references
from nbmlops.backend.store import open_store
from nbmlops.cli import main
from nbmlops.config import configure, resolve_settings
from nbmlops.data import SnapshotStore, fingerprint
from nbmlops.data.gc import _delete, _stored, gc
from nbmlops.exceptions import FlushTimeoutError
from nbmlops.tracking.artifact_snapshots import DATA_EXPERIMENT, open_snapshot_store
from nbmlops.tracking.snapshot_gc import WAITING, collect_snapshots, journal_references
from tests.conftest import free_port

DAY = 86_400


def frame(seed: int) -> pd.DataFrame:
    """Data no other test logs (so no other run in the shared store references it)."""
    rng = np.random.default_rng([seed, time.time_ns()])
    return pd.DataFrame({"x": rng.normal(size=50), "y": rng.integers(0, 9, 50)})


def age(store: SnapshotStore, fingerprint_: str, days: float) -> None:
    """Make a snapshot look stored (and last used) ``days`` ago."""
    when = time.time() - days * DAY
    for path in _stored(store.root)[fingerprint_]:
        os.utime(path, (when, when))


def files_of(store: SnapshotStore, fingerprint_: str) -> list[Path]:
    return _stored(store.root).get(fingerprint_, [])


@pytest.fixture
def scene(project: Path):
    """An old snapshot a run logged, an old one a registered version was trained on, an old orphan, a young one."""
    from sklearn.linear_model import LinearRegression

    settings = resolve_settings()
    store = SnapshotStore(settings.data_dir)
    logged, trained_on = frame(1), frame(2)
    with nbmlops.track("fit"):
        nbmlops.log_dataset(logged, "logged")
    model = LinearRegression().fit(trained_on[["x"]], trained_on["y"])
    version = nbmlops.register(model, f"gc-model-{time.time_ns()}", training_data=trained_on[["x"]], timeout=120)
    assert version is not None
    nbmlops.flush(60)
    orphan, young = store.save(frame(3)), store.save(frame(4))
    fps = {"run": fingerprint(logged), "version": fingerprint(trained_on[["x"]]), "orphan": orphan.fingerprint,
           "young": young.fingerprint}
    for key in ("run", "version", "orphan"):
        age(store, fps[key], 40)
    age(store, fps["young"], 2 / 24)  # two hours: past the last hour, which is kept whatever the window
    return store, open_store(settings.tracking_uri, settings.artifact_root), fps


def test_gc_keeps_what_runs_registered_versions_and_young_snapshots_need_and_deletes_the_rest(scene):
    store, tracking, fps = scene
    needed = snapshot_references(tracking)
    assert needed[fps["run"]] == BY_RUNS and needed[fps["version"]] == BY_VERSIONS
    report = gc(store, lambda: snapshot_references(tracking), keep_days=30)
    assert (report.freed, report.kept) == (1, {BY_RUNS: 1, BY_VERSIONS: 1, "younger than 30 day(s)": 1})
    assert report.freed_bytes > 0 and report.kept_bytes > 0
    assert fps["orphan"] not in store and not files_of(store, fps["orphan"])
    for key in ("run", "version", "young"):
        assert fps[key] in store and store.info(fps[key]).fingerprint == fps[key]
    assert not list(store.root.glob("??/.gc-*")) and not list(store.root.glob(".gc-*"))


def test_a_dry_run_deletes_nothing_and_says_what_it_would_free(scene):
    store, tracking, fps = scene
    before = sorted(p for p in store.root.rglob("*") if p.is_file())
    report = gc(store, lambda: snapshot_references(tracking), keep_days=30, dry_run=True)
    assert report.dry_run and report.freed == 1 and report.freed_bytes == sum(
        p.stat().st_size for p in files_of(store, fps["orphan"])
    )
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == before
    assert report.format().splitlines()[-1] == "dry run: nothing was deleted"


def test_the_cli_prints_what_it_frees_and_keeps_and_why(scene, capsys):
    store, _, fps = scene
    assert main(["data", "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("would free 1 snapshot(s), ")
    assert out[1].startswith("kept 3 snapshot(s), ") and out[1].endswith(
        ": 1 needed by registered model versions, 1 needed by runs, 1 younger than 30 day(s)"
    )
    assert fps["orphan"] in store
    assert main(["data", "gc", "--keep-days", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("freed 2 snapshot(s), ") and out[1].startswith("kept 2 snapshot(s), ")
    assert fps["orphan"] not in store and fps["young"] not in store and fps["run"] in store


def test_a_negative_retention_is_a_usage_error(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "gc", "--keep-days", "-1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("expected a number of days >= 0, got '-1'")


def test_a_snapshot_re_used_or_written_while_gc_runs_is_kept(project):
    store = SnapshotStore(resolve_settings().data_dir)
    old_data, new_data = frame(5), frame(6)
    old = store.save(old_data).fingerprint
    age(store, old, 400)

    def needed() -> dict[str, str]:  # a notebook logs the old data again, and new data, while gc lists references
        store.save(old_data)
        store.save(new_data)
        return {}

    report = gc(store, needed, keep_days=0)
    assert report.freed == 0 and report.kept == {"used within the last hour": 2}
    assert old in store and fingerprint(new_data) in store


def test_a_snapshot_re_used_between_gc_listing_it_and_deleting_it_is_put_back(project):
    store = SnapshotStore(resolve_settings().data_dir)
    data = frame(7)
    fp = store.save(data).fingerprint
    age(store, fp, 400)
    listed = {path: path.stat() for path in files_of(store, fp)}
    assert store.save(data) is not None  # re-used after the listing: marks the sidecar
    assert _delete(listed) is False
    assert fp in store and store.info(fp).fingerprint == fp and not list(store.root.glob("??/.gc-*"))
    age(store, fp, 400)
    assert _delete({path: path.stat() for path in files_of(store, fp)}) is True and fp not in store


def test_gc_deletes_from_the_mlflow_artifact_store_what_nothing_needs(project, client):
    configure(data_store="mlflow")
    store = open_snapshot_store(resolve_settings())
    assert store.remote is not None
    kept_data = frame(8)
    with nbmlops.track("shared"):
        nbmlops.log_dataset(kept_data, "kept")
    nbmlops.flush(60)
    orphan = store.save(frame(9)).fingerprint
    store.push(orphan)
    kept = fingerprint(kept_data)
    for fp in (orphan, kept):
        age(store, fp, 40)
    settings = resolve_settings()
    tracking = open_store(settings.tracking_uri, settings.artifact_root)
    remote = MlflowSnapshotFiles(tracking, DATA_EXPERIMENT)
    assert {orphan, kept} <= set(remote.sizes())
    report = collect_snapshots(keep_days=30)  # the Python call behind `nbmlops data gc`
    assert report.remote_freed == 1 and report.remote_kept.get(BY_RUNS, 0) >= 1
    assert report.freed == 1 and report.kept == {BY_RUNS: 1}
    left = MlflowSnapshotFiles(tracking, DATA_EXPERIMENT).sizes()
    assert orphan not in left and kept in left
    assert orphan not in store and kept in store


@pytest.fixture
def dead_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking store is a port nothing listens on; snapshots stay local; budgets short."""
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("NBMLOPS_DATA_STORE", "local")
    monkeypatch.setenv("NBMLOPS_CALL_TIMEOUT", "1")
    monkeypatch.setenv("NBMLOPS_FLUSH_TIMEOUT", "2")
    return uri


def test_a_snapshot_a_run_recorded_during_an_outage_is_kept_while_its_records_wait(dead_store):
    settings = resolve_settings()
    data = frame(10)
    with nbmlops.track("offline"):
        digest = nbmlops.log_dataset(data, "waiting")
    with pytest.raises(FlushTimeoutError):  # the snapshot is stored; its run's records wait in the journal
        nbmlops.flush(5)
    store = SnapshotStore(settings.data_dir)
    assert digest in store and journal_references(settings.journal_dir)[digest] == WAITING
    age(store, digest, 400)
    report = gc(store, lambda: journal_references(settings.journal_dir), keep_days=0)
    assert report.freed == 0 and report.kept == {WAITING: 1} and digest in store


def test_the_cli_deletes_nothing_and_exits_1_in_one_line_when_the_store_cannot_be_asked(dead_store, capsys):
    store = SnapshotStore(resolve_settings().data_dir)
    orphan = store.save(frame(11)).fingerprint
    age(store, orphan, 400)
    assert main(["data", "gc", "--keep-days", "0"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("nbmlops: ") and "127.0.0.1" in line and "Traceback" not in captured.err
    assert orphan in store and captured.out == ""


def test_a_write_in_progress_is_left_alone_and_one_abandoned_long_ago_is_removed(project):
    store = SnapshotStore(resolve_settings().data_dir)
    fp = store.save(frame(12)).fingerprint
    writing = store.root / fp[:2] / f".{'1' * 32}.parquet.x1.tmp"  # as SnapshotStore names its temporary files
    abandoned = store.root / fp[:2] / f".{'2' * 32}.parquet.x2.tmp"
    for path in (writing, abandoned):
        path.write_bytes(b"PAR1" * 1000)
    old = time.time() - 2 * DAY
    os.utime(abandoned, (old, old))
    report = gc(store, dict, keep_days=0, dry_run=True)
    assert report.partial == 1 and abandoned.exists()
    report = gc(store, dict, keep_days=0)
    assert report.partial == 1 and report.freed == 0 and "abandoned partial write" in report.format()
    assert writing.exists() and not abandoned.exists() and fp in store


def test_gc_deletes_through_a_tracking_server_what_nothing_needs(tmp_path, monkeypatch, project):
    """A team's server (``mlflow server``, artifacts proxied): the orphan's files are deleted there too."""
    from tests.conftest import mlflow_server

    monkeypatch.delenv("NBMLOPS_ARTIFACT_ROOT", raising=False)  # a server keeps its own artifacts
    with mlflow_server(tmp_path / "server") as uri:
        monkeypatch.setenv("NBMLOPS_TRACKING_URI", uri)
        settings = resolve_settings()
        assert settings.data_store == "mlflow"
        store = open_snapshot_store(settings)
        kept_data = frame(13)
        with nbmlops.track("shared"):
            kept = nbmlops.log_dataset(kept_data, "kept")
        nbmlops.flush(120)
        orphan = store.save(frame(14)).fingerprint
        assert store.push(orphan)
        for fp in (orphan, kept):
            age(store, fp, 40)
        assert main(["data", "gc"]) == 0
        tracking = open_store(uri, None)
        left = MlflowSnapshotFiles(tracking, DATA_EXPERIMENT).sizes()
        assert kept in left and orphan not in left
        assert not list((tmp_path / "server" / "artifacts").rglob(f"{orphan}.*"))
        assert orphan not in store and kept in store
