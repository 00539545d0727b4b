"""Headless notebook runs: papermill executes, nbmlops records and decides."""

from nbmlops.runner.execute import NotebookRun, run_notebook
from nbmlops.runner.ranking import SweepResult
from nbmlops.runner.sweep import run_sweep

__all__ = ["NotebookRun", "SweepResult", "run_notebook", "run_sweep"]
