"""The tags by which nbmlops finds its runs again in a tracking store."""

__all__ = [
    "ATTEMPT_TAG", "CELL_KEY_TAG", "DUPLICATE_TAG", "PARENT_KEY_TAG", "RUN_KEY_TAG", "SUPERSEDED_TAG", "SUPERSEDES_TAG", "TASK_TAG",
]

#: the local key of the run (a uuid made when it started): a replay finds the run by it
RUN_KEY_TAG = "nbmlops.run_key"
PARENT_KEY_TAG = "nbmlops.parent_key"
DUPLICATE_TAG = "nbmlops.duplicate_of"
#: runs that are attempts of one task (a sweep's combination that Dask ran again after its worker died) share
#: this tag; one of them is live, the others end KILLED naming it (SUPERSEDED_TAG), numbered by start order
TASK_TAG = "nbmlops.task"
ATTEMPT_TAG = "nbmlops.attempt"
SUPERSEDED_TAG = "nbmlops.superseded_by"
SUPERSEDES_TAG = "nbmlops.supersedes"
#: the key of a tracked cell (its notebook and cell id): the runs of one cell share it
CELL_KEY_TAG = "nbmlops.cell_key"
