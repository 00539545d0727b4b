"""Item 9 of the trust issue: ``nbmlops sync`` exits 0 only when every record was delivered.

A damaged record, a record the store refused, or records the store could not take make it exit 1, with one
line for each naming the journal and byte offset, or the record's kind and run. A journal still owned by a
live process is not an error. The journals are real, left by real processes (``NBMLOPS_HANDOFF=1`` keeps a
process from delivering its own records), the store is a real sqlite store or a port where nothing listens.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

from nbmlops.journal import list_journals, read_records
from tests.conftest import free_port, runs_of

HEADER = struct.Struct("<4sII")

THREE_RUNS = """
import nbmlops
keys = []
for i in range(3):
    with nbmlops.track(f"run{i}", params={"i": i}) as run:
        nbmlops.log_metric("m", float(i * 10))
    keys.append(run.key)
print("keys", *keys, flush=True)
"""

REFUSED = """
import nbmlops
with nbmlops.track("refused") as run:
    nbmlops.log_metric("m", 1.0)
    run.set_tags({"not a valid tag name!": "x"})
    run.log_bytes(bytes(range(256)) * 8192, "blob.bin")
print("key", run.key, flush=True)
"""

LIVE = """
import sys
import nbmlops
with nbmlops.track("live") as run:
    nbmlops.log_metric("m", 1.0)
    nbmlops.flush()
    print("key", run.key, flush=True)
    sys.stdin.readline()
"""


def _env(uri: str, experiment: str, handoff: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMLOPS_", "MLFLOW_"))}
    env.update(NBMLOPS_TRACKING_URI=uri, NBMLOPS_EXPERIMENT=experiment, NBMLOPS_CAPTURE="none",
               NBMLOPS_FLUSH_TIMEOUT="2")
    if "NBMLOPS_ARTIFACT_ROOT" in os.environ:
        env["NBMLOPS_ARTIFACT_ROOT"] = os.environ["NBMLOPS_ARTIFACT_ROOT"]
    if handoff:
        env["NBMLOPS_HANDOFF"] = "1"  # the records stay in the journal, for sync to deliver
    return env


def _leave_journal(project: Path, script: str, uri: str, experiment: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=_env(uri, experiment), capture_output=True, text=True,
        check=False, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def _sync(project: Path, uri: str, experiment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "sync"], cwd=project, env=_env(uri, experiment, handoff=False),
        capture_output=True, text=True, check=False, timeout=300,
    )


def _frames(path: Path) -> list[tuple[int, int, dict]]:
    data, pos, frames = path.read_bytes(), 0, []
    while pos < len(data):
        _, length, _ = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size : pos + HEADER.size + length]
        frames.append((pos, pos + HEADER.size + length, json.loads(payload)))
        pos += HEADER.size + length
    return frames


def test_sync_of_a_damaged_journal_names_each_damaged_record_and_exits_1(project, store_uri, client, request):
    experiment = request.node.name
    keys = _leave_journal(project, THREE_RUNS, store_uri, experiment).stdout.split("keys", 1)[1].split()
    (journal,) = list_journals(project / ".nbmlops" / "journal")
    frames = _frames(journal)
    flipped = next(start for start, _, r in frames if r["t"] == "metrics" and r["run"] == keys[1])
    data = bytearray(journal.read_bytes())
    data[flipped + HEADER.size + 3] ^= 0x20
    journal.write_bytes(bytes(data[:-3]))  # and the last record cut short

    result = _sync(project, store_uri, experiment)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    damaged = [line for line in result.stderr.splitlines() if line.startswith("damaged: ")]
    assert len(damaged) == 2, result.stderr
    assert f"{journal} at byte {flipped}: checksum mismatch" in damaged[0]
    assert f"{journal} at byte {frames[-1][0]}: truncated record" in damaged[1]
    assert re.search(r"delivered \d+ record\(s\) from 1 journal\(s\)", result.stdout)
    assert len(runs_of(client, experiment)) == 3  # the intact records were still delivered


def test_sync_with_records_the_store_refused_names_each_by_kind_and_run_and_exits_1(
    project, store_uri, client, request
):
    experiment = request.node.name
    key = _leave_journal(project, REFUSED, store_uri, experiment).stdout.split("key", 1)[1].strip()
    journal_dir = project / ".nbmlops" / "journal"
    (journal,) = list_journals(journal_dir)
    (artifact,) = [r for _, r in read_records(journal) if r["t"] == "artifact"]
    payload = journal_dir / artifact["file"]
    with open(payload, "r+b") as fh:  # the payload kept beside the journal is damaged on disk
        fh.seek(1000)
        fh.write(b"\xff\xfe")

    result = _sync(project, store_uri, experiment)

    assert result.returncode == 1, result.stdout + result.stderr
    refused = [line for line in result.stderr.splitlines() if line.startswith("refused by the store: ")]
    assert len(refused) == 2, result.stderr
    assert any(f"tags record of run {key}" in line for line in refused)
    assert any(f"artifact record of run {key}" in line and "checksum" in line for line in refused)
    kept = [json.loads(line) for line in (journal_dir / "refused.jsonl").read_text().splitlines()]
    assert sorted(k["record"]["t"] for k in kept) == ["artifact", "tags"]
    moved = next(k["record"]["file"] for k in kept if k["record"]["t"] == "artifact")
    assert Path(moved).is_file() and Path(moved).stat().st_size == 256 * 8192  # the payload was kept with it
    (run,) = runs_of(client, experiment)
    assert run.info.status == "FINISHED" and run.data.metrics == {"m": 1.0}


def test_sync_with_the_store_down_names_the_journal_and_offset_and_exits_1(project, request):
    experiment = request.node.name
    dead = f"http://127.0.0.1:{free_port()}"
    _leave_journal(project, THREE_RUNS, dead, experiment)
    (journal,) = list_journals(project / ".nbmlops" / "journal")

    result = _sync(project, dead, experiment)

    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("not delivered: ")]
    records = len(_frames(journal))
    assert f"{journal} from byte 0: {records} record(s) of 3 run(s)" in line, line
    assert "unavailable" in line
    assert journal.exists()


def test_a_journal_owned_by_a_live_process_is_not_an_error_and_is_delivered_once_its_process_ends(
    project, store_uri, client, request
):
    experiment = request.node.name
    live = subprocess.Popen(
        [sys.executable, "-c", LIVE], cwd=project, env=_env(store_uri, experiment), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert live.stdout.readline().startswith("key")
        (journal,) = list_journals(project / ".nbmlops" / "journal")
        busy = _sync(project, store_uri, experiment)
        assert busy.returncode == 0, busy.stderr
        assert f"still owned by a running process (not an error): {journal.name}" in busy.stdout, busy.stdout
        assert runs_of(client, experiment) == []
        live.communicate("go\n", timeout=120)
        assert live.returncode == 0
    finally:
        if live.poll() is None:
            live.kill()
    done = _sync(project, store_uri, experiment)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client, experiment)
    assert run.info.status == "FINISHED"
