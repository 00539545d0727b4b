"""The serving run of one model server, and the delivery of its traffic log to the store.

The main process of ``nbmlops serve`` makes a :class:`ServingRecorder`: :meth:`ServingRecorder.start` creates
the serving run (experiment ``serve/NAME``, RUNNING) and its folder ``<root>/.nbmlops/serve/<run id>/``, where
the serving processes write their traffic log segments (:class:`nbmlops.serving.traffic_log.TrafficLog`); a
thread then delivers what they wrote every ``interval`` seconds; :meth:`ServingRecorder.stop` delivers the rest
and ends the run FINISHED. :meth:`ServingRecorder.deliver_orphans` delivers the folders of servers that died
(into their own serving runs, which then end KILLED).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbmlops.config import Settings

__all__ = ["DEFAULT_INTERVAL", "ServingRecorder", "serve_root"]

#: seconds between two deliveries (and heartbeats) of a running server
DEFAULT_INTERVAL = 5.0


def serve_root(settings: Settings) -> Path:
    """The folder holding the serving folders of a project: ``<root>/.nbmlops/serve``."""
    return settings.state_dir / "serve"


class ServingRecorder:
    """The serving run of this server and the thread that delivers its traffic.

    Args:
        settings: the project's settings (default: resolved from the working directory).
        interval: seconds between deliveries.
    """

    def __init__(self, settings: Settings | None = None, *, interval: float = DEFAULT_INTERVAL) -> None:
        from nbmlops.config import resolve_settings

        self.settings = settings or resolve_settings()
        self.interval = interval
        self.run_id: str | None = None
        self.folder: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, model: str, alias: str, version: int, url: str, host: str, pid: int,
              shadow: str | None = None) -> tuple[str, Path]:
        """Create the serving run of ``model@alias`` serving ``version`` at ``url`` and its folder; start the
        delivery thread. Returns the run id and the folder."""
        raise NotImplementedError

    def deliver(self) -> bool:
        """Deliver what the serving processes wrote since the last delivery, now. True when it all went."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the thread, deliver the rest, end the run FINISHED (or leave it RUNNING for the next server to
        deliver and end, when the store is down)."""
        raise NotImplementedError

    def deliver_orphans(self) -> list[str]:
        """Deliver the serving folders of this project whose servers are gone, each into its own serving run,
        which is then ended KILLED. Returns the run ids fully delivered."""
        raise NotImplementedError
