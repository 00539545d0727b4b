"""The versions a server downloads live in temporary folders that it removes when the model is dropped; a serving
process that dies without removing them (SIGKILL) leaves them behind, and the next load of any server removes
them, never those of a process that still serves."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from nbmlops.serving.follower import remove_orphan_downloads
from tests.conftest import stop_group
from tests.serving.conftest import serve_process


def _downloads_held_by(pid: int | str) -> set[Path]:
    """The download folders whose owner lock process ``pid`` holds open."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.name == ".owner" and target.parent.name.startswith("nbmlops-serve-v"):
            held.add(target.parent)
    return held


def test_a_killed_servers_downloaded_version_is_removed_by_the_next_load_but_a_live_ones_stays(models, project,
                                                                                                 serving):
    process, _ = serve_process(project, f"{models.name}@champion")
    try:
        killed = _downloads_held_by(process.pid)
        assert len(killed) == 1 and (next(iter(killed)) / ".owner").exists()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
    finally:
        stop_group(process)
    assert all(folder.exists() for folder in killed)  # nobody removed it

    live = serving(f"{models.name}@champion")  # this process loads a version: orphans go first
    assert live.url
    mine = _downloads_held_by("self")
    assert mine and not mine & killed
    assert not any(folder.exists() for folder in killed)
    assert not set(remove_orphan_downloads()) & mine  # a live process's folder is never taken
    assert all((folder / ".owner").exists() for folder in mine)
