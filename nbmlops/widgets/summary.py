"""The ``%%track`` summary as a small widget: the same HTML as :meth:`Summary.to_html`, updated in place."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from nbmlops.tracking.summary import Summary

__all__ = ["SummaryWidget"]


class SummaryWidget(w.HTML):
    """Shows a run's summary; :meth:`update` redraws it when the run reaches the store (its link appears).

    Its MIME bundle also holds the summary's ``text/html``, ``text/plain`` and run payload, so exported
    notebooks and headless runners read the same output as without widgets.
    """

    def __init__(self, summary: Summary) -> None:
        super().__init__(value=summary.to_html())
        self.add_class("nbmlops-summary-widget")
        self.summary = summary

    def update(self, summary: Summary) -> dict[str, Any]:
        """Show ``summary`` now; returns the new MIME bundle (for the output's display handle)."""
        self.summary = summary
        self.value = summary.to_html()
        return self.mimebundle()

    def mimebundle(self) -> dict[str, Any]:
        """The summary's bundle plus this widget's view."""
        bundle = self.summary.mimebundle()
        view = super()._repr_mimebundle_() or {}
        bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return bundle

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.mimebundle()
