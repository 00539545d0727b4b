"""Where a sweep's combinations run: a local process pool, or a Dask cluster for sweeps that outgrow one machine.

Either backend is a pair ``(submit, as_completed)``: ``submit(job)`` returns a future of
:func:`~nbmlops.runner.sweep_worker.run_combination`'s outcome, ``as_completed(futures)`` yields them as they end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nbmlops.config import Settings
from nbmlops.exceptions import DaskNotInstalledError, SchedulerUnavailableError, SweepError
from nbmlops.runner.sweep_worker import SweepJob, init_pool_worker, run_combination

__all__ = ["AsCompleted", "Submit", "open_backend", "require_shared_store"]

Submit = Callable[[SweepJob], Any]
AsCompleted = Callable[[Iterable[Any]], Iterator[Any]]


def require_shared_store(settings: Settings) -> None:
    """Refuse a sweep on Dask whose tracking store is a local file the workers cannot reach."""
    from nbmlops.redact import redact_uri

    scheme = settings.tracking_uri.split(":", 1)[0].lower()
    if scheme in ("sqlite", "file"):
        raise SweepError(
            f"a sweep on Dask needs a tracking store every worker can reach, and {redact_uri(settings.tracking_uri)} "
            f"is a local {scheme} store: start an MLflow tracking server (mlflow server --backend-store-uri ... "
            "--host 0.0.0.0) and use it (--tracking-uri http://HOST:5000 or NBMLOPS_TRACKING_URI)"
        )


@contextlib.contextmanager
def open_backend(workers: int | None, dask: str | None, count: int) -> Iterator[tuple[Submit, AsCompleted]]:
    """``(submit, as_completed)`` of a local process pool (at most ``workers`` or the CPUs, and ``count``,
    processes), or of a client of the Dask cluster at ``dask``."""
    if dask is None:
        with _process_pool(workers, count) as backend:
            yield backend
    else:
        with _dask_client(dask) as backend:
            yield backend


@contextlib.contextmanager
def _process_pool(workers: int | None, count: int) -> Iterator[tuple[Submit, AsCompleted]]:
    context = multiprocessing.get_context("spawn")
    interrupted = context.Event()
    with _spawnable_main():
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers or os.cpu_count() or 1, count), mp_context=context,
            initializer=init_pool_worker, initargs=(interrupted,),
        )
        try:
            yield (lambda job: pool.submit(run_combination, job)), concurrent.futures.as_completed
        finally:  # after an interrupt, no queued combination starts (a no-op when all are done)
            interrupted.set()
            pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def _dask_client(address: str) -> Iterator[tuple[Submit, AsCompleted]]:
    try:
        import distributed
    except ImportError:
        raise DaskNotInstalledError() from None
    try:
        client = distributed.Client(address)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnavailableError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        yield (
            lambda job: client.submit(run_combination, job, pure=False, key=f"nbmlops-sweep-{job.parent_key}-{job.index}")
        ), distributed.as_completed


@contextlib.contextmanager
def _spawnable_main() -> Iterator[None]:
    """Let spawned workers start from a notebook: IPython's ``__main__`` has no ``__spec__``, which
    multiprocessing reads when it starts a process."""
    main = sys.modules.get("__main__")
    missing = main is not None and not hasattr(main, "__spec__")
    if missing:
        main.__spec__ = None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if missing:
            with contextlib.suppress(AttributeError):
                del main.__spec__  # type: ignore[union-attr]
