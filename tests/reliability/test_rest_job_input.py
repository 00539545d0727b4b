"""Item 14 of the trust issue: the server's job input is typed, bounded, and never echoed large or secret.

A real Jupyter server with the extension (the fixtures of ``tests/server``) hosted by this test process, so
its memory is this process's memory. Oversized bodies are sent over a raw socket from a thread, as a client
that ignores the server's answer would send them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from jupyter_core.utils import ensure_event_loop
from jupyter_server.utils import url_path_join
from pytest_jupyter.jupyter_server import *  # noqa: F403 - jupyter_server's fixtures, for this module only

from nbmlops.runner.parameters import ParameterTypeError, check_parameters
from nbmlops.server.handlers import MAX_BODY_BYTES
from nbmlops.server.jobs import ECHO_CHARS, MAX_VALUE_BYTES
from tests.server.conftest import api, jobs, jp_server_config, make_notebook, root, write_notebook  # noqa: F401

PARAMETERS = """C = 1.0
n = 3
flag = False
label = 'x'
items = []
ratio = 0.5  # type: Optional[float]
anything = None"""
SECRET = "Pw9RestEchoSecret"
TOKEN = "ghp_" + "RestEcho7" * 5


def on_server_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on the loop the server runs on (pytest-jupyter's hook that does this for plain
    ``async def`` tests is registered by ``tests/server/conftest.py``, for that folder only)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        ensure_event_loop(prefer_selector_loop=True).run_until_complete(test(*args, **kwargs))

    return run


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _no_job_started(jobs, root: Path, children_before: set[int]) -> bool:
    """No job listed, no new child process (kernel or run), no job file written."""
    return jobs.list() == [] and _children() <= children_before and not (root / ".nbmlops" / "jobs").exists()


async def _wait_until_ended(api, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, job = await api("GET", "jobs", job_id)
        assert code == 200, job
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.3)


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({"C": "abc"}, "parameter C: expected a number (float), got a string"),
        ({"C": [1, 2]}, "parameter C: expected a number (float), got a list"),
        ({"C": True}, "parameter C: expected a number (float), got a boolean"),
        ({"n": 2.5}, "parameter n: expected an integer (int), got a number"),
        ({"flag": 1}, "parameter flag: expected true or false (bool), got an integer"),
        ({"label": 5}, "parameter label: expected a string (str), got an integer"),
        ({"items": {"a": 1}}, "parameter items: expected a list (list), got an object"),
        ({"ratio": "half"}, "parameter ratio: expected a number (float) or null, got a string"),
        ({"C": "abc", "n": None}, "parameter C: expected a number (float), got a string; "
                                  "parameter n: expected an integer (int), got null"),
    ],
)
@on_server_loop
async def test_a_wrong_type_is_400_naming_the_field_and_type_and_starts_no_process(
    api, make_notebook, root, jobs, parameters, error
):
    make_notebook("train.ipynb", "x = C", parameters=PARAMETERS)
    children_before = _children()
    code, answer = await api("POST", "jobs", body={"notebook": "train.ipynb", "parameters": parameters})
    assert (code, answer) == (400, {"error": error})
    assert _no_job_started(jobs, root, children_before)


def test_typed_checking_accepts_what_json_can_say_for_each_declared_type(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", "x = C", parameters=PARAMETERS)
    accepted = {"C": 2, "n": -4, "flag": True, "label": "1e5", "items": [1, "a"], "ratio": None,
                "anything": {"k": [1, None]}}
    assert check_parameters(notebook, accepted, typed=True) == accepted
    assert check_parameters(notebook, {"C": "abc"}) == {**check_parameters(notebook, {}), "C": "abc"}  # untyped
    with pytest.raises(ParameterTypeError) as caught:
        check_parameters(notebook, {"label": 1.5, "flag": 0}, typed=True)
    assert isinstance(caught.value, ValueError)  # the CLI's usage error: exit 2
    assert caught.value.problems == {"label": "expected a string (str), got a number",
                                     "flag": "expected true or false (bool), got an integer"}


def _post_raw(port: int, path: str, token: str, size: int, declared: bool) -> tuple[int, dict[str, Any]]:
    """POST ``size`` bytes to ``path`` as a careless client does: all of it, without waiting for an answer
    (with Content-Length, or chunked); then read whatever the server answered."""
    chunk = b"x" * (256 * 1024)
    framing = f"Content-Length: {size}" if declared else "Transfer-Encoding: chunked"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head.encode())
            for _ in range(size // len(chunk)):
                sock.sendall(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if not declared:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed the connection: the rest was never read
            pass
        answer = b""
        try:
            while part := sock.recv(65536):
                answer += part
        except OSError:
            pass
    head_text, _, body = answer.partition(b"\r\n\r\n")
    return int(head_text.split()[1]), json.loads(body)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@on_server_loop
async def test_a_30_mb_body_is_413_and_the_server_does_not_grow(
    api, make_notebook, root, jobs, jp_http_port, jp_base_url, jp_serverapp, declared
):
    make_notebook("train.ipynb", "x = C", parameters=PARAMETERS)
    children_before = _children()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 30 * 1024 * 1024
    try:
        code, answer = await asyncio.to_thread(
            _post_raw, jp_http_port, url_path_join(jp_base_url, "nbmlops", "api", "jobs"),
            jp_serverapp.identity_provider.token, size, declared,
        )
    finally:
        sampling = False
        sampler.join()
    assert code == 413
    assert answer == {"error": f"the request body is larger than {MAX_BODY_BYTES:,} bytes, the most this API reads"}
    assert peak - before < 8 * 1024 * 1024, f"the server grew by {(peak - before) / 2**20:.1f} MiB"
    assert _no_job_started(jobs, root, children_before)
    assert (await api("GET", "status"))[0] == 200  # the server still answers


@on_server_loop
async def test_the_body_limit_is_the_servers_nbmlops_max_body_bytes_setting(
    api, make_notebook, root, jobs, jp_serverapp
):
    make_notebook("train.ipynb", "x = C", parameters=PARAMETERS)
    jp_serverapp.web_app.settings["nbmlops_max_body_bytes"] = 100  # c.ServerApp.tornado_settings lands here
    body = {"notebook": "train.ipynb", "parameters": {"label": "y" * 100}}
    assert await api("POST", "jobs", body=body) == (
        413, {"error": "the request body is larger than 100 bytes, the most this API reads"})
    assert jobs.list() == []


@on_server_loop
async def test_a_value_above_the_per_value_limit_is_413_naming_it(api, make_notebook, root, jobs):
    make_notebook("train.ipynb", "x = C", parameters=PARAMETERS)
    children_before = _children()
    code, answer = await api("POST", "jobs", body={"notebook": "train.ipynb",
                                                   "parameters": {"label": "y" * MAX_VALUE_BYTES}})
    assert code == 413
    assert answer["error"].startswith(f"parameter label: its value is {MAX_VALUE_BYTES + 2:,} bytes of JSON")
    assert "yyyy" not in answer["error"]
    assert _no_job_started(jobs, root, children_before)


@on_server_loop
async def test_a_large_allowed_value_runs_whole_but_is_never_echoed_in_full(api, make_notebook, root, jobs):
    make_notebook("train.ipynb", "print(len(label), len(items))", parameters=PARAMETERS)
    label, items = "z" * 50_000, list(range(5000))
    code, job = await api("POST", "jobs", body={"notebook": "train.ipynb",
                                                "parameters": {"label": label, "items": items, "n": 7}})
    assert code == 202, job
    listed = (await api("GET", "jobs"))[1]["jobs"][0]
    for shown in (job["parameters"], listed["parameters"], (await api("GET", "jobs", job["job_id"]))[1]["parameters"]):
        assert shown["label"] == "z" * ECHO_CHARS + "…"
        assert shown["items"] == json.dumps(items)[:ECHO_CHARS] + "…"
        assert shown["n"] == 7  # short values are shown as they are
    job = await _wait_until_ended(api, job["job_id"])
    assert job["status"] == "finished", job
    executed = nbformat.read(root / job["output"], as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "50000 5000"  # the notebook got them whole


@on_server_loop
async def test_a_secret_is_never_echoed_by_a_job_or_the_job_list(api, make_notebook, root, jobs, jp_fetch):
    make_notebook("train.ipynb", "x = len(db_password) + len(note)", parameters='db_password = ""\nnote = ""')
    code, job = await api("POST", "jobs", body={"notebook": "train.ipynb",
                                                "parameters": {"db_password": SECRET, "note": f"token {TOKEN}"}})
    assert code == 202, job
    assert job["parameters"] == {"db_password": "***", "note": "token ***"}
    job = await _wait_until_ended(api, job["job_id"])
    assert job["status"] == "finished", job
    for parts in (("jobs",), ("jobs", job["job_id"])):
        raw = (await jp_fetch("nbmlops", "api", *parts)).body.decode()
        assert SECRET not in raw and TOKEN not in raw and '"db_password": "***"' in raw
    folder = root / ".nbmlops" / "jobs"
    assert not list(folder.glob("*.parameters.yaml"))  # the values' file went with the job
    assert not [p for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
