#!/usr/bin/env bash
# A Dask scheduler and workers for `nbmlops sweep --dask`: run the scheduler once, and the workers on every machine
# that has the same Python packages as the users (nbmlops, the notebooks' libraries, ipykernel).
#
#   ./workers.sh scheduler                    # on one machine: tcp://THIS-HOST:8786
#   ./workers.sh worker tcp://HOST:8786 [N]   # on each worker machine: N worker processes (default: the CPUs)
#
# One thread per worker process: a worker runs one notebook at a time (a run's environment, journal and working
# directory belong to the whole process), so more threads would only queue tasks another worker could run.
# Workers need to reach the scheduler and the tracking server only; their state (journals, fetched data) lives
# in NBMLOPS_WORKER_DIR (default ~/.cache/nbmlops/worker), never where they are started.
set -euo pipefail
case "${1:-}" in
    scheduler) exec dask scheduler --host "${HOST:-0.0.0.0}" --port "${PORT:-8786}" ;;
    worker)
        address="${2:?the scheduler address, tcp://HOST:8786}"
        exec dask worker "$address" --nthreads 1 --nworkers "${3:-$(nproc)}" ;;
    *) echo "usage: $0 scheduler | worker tcp://HOST:8786 [N]" >&2; exit 2 ;;
esac
