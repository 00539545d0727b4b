"""Headless notebook runs: papermill executes, nbmlops records."""

from nbmlops.runner.execute import NotebookRun, run_notebook

__all__ = ["NotebookRun", "run_notebook"]
