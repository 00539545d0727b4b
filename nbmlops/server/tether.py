"""Run a command for as long as the process that started this one lives:
``python -m nbmlops.server.tether [--remove FOLDER] COMMAND [ARG...]``.

The command runs in a process group of its own (with every process it starts: ``mlflow server`` starts uvicorn),
and the whole group is ended (SIGTERM, then SIGKILL after :data:`GRACE_S`) when

- this process's standard input reaches its end: the parent holds the only other end of that pipe, so this happens
  however the parent goes, SIGKILL and crashes included;
- this process gets SIGTERM, SIGINT or SIGHUP.

This process ends with the command's exit code when the command ends on its own. ``--remove FOLDER`` is removed
once the command's group has ended, whichever way (the private folder of the MLflow UI's socket). Standard library
only: it is started by Jupyter Server (:mod:`nbmlops.server.ui_proxy`) and imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

__all__ = ["GRACE_S", "main"]

#: seconds the command's group has to end after SIGTERM before it is killed
GRACE_S = 10.0
_POLL_S = 0.25


def main(arguments: list[str]) -> int:
    """Run the command in ``arguments`` tethered to this process's parent (see the module docstring); its exit
    code, or 0 when it was ended because the parent went."""
    remove = None
    if arguments[:1] == ["--remove"] and len(arguments) > 1:
        remove, arguments = arguments[1], arguments[2:]
    if not arguments:
        print("usage: python -m nbmlops.server.tether [--remove FOLDER] COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        return _run(arguments)
    finally:
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)


def _run(command: list[str]) -> int:
    ended = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: ended.set())
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=_wait_for_end_of_input, args=(ended,), daemon=True, name="parent-watch").start()
    while not ended.wait(_POLL_S):
        code = child.poll()
        if code is not None:
            _end_group(child.pid, signal.SIGKILL)  # whatever it started and left behind
            return code
    _stop(child)
    return 0


def _wait_for_end_of_input(ended: threading.Event) -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    ended.set()


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM to the child's group, SIGKILL to what is left of it after :data:`GRACE_S`."""
    _end_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        child.poll()  # reaped, so that it no longer counts as a member of its group
        if not _end_group(child.pid, 0):
            break
        time.sleep(_POLL_S)
    _end_group(child.pid, signal.SIGKILL)
    child.wait()


def _end_group(group: int, signum: int) -> bool:
    """Send ``signum`` to the process group ``group``; whether the group still had a member."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
