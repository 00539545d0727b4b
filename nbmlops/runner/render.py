"""The HTML render of a notebook papermill executes, made off the runner's path: the exporter is warmed up
while the kernel works, and the render starts as soon as the last cell has run, while papermill shuts the
kernel down."""

from __future__ import annotations

import concurrent.futures
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbmlops.tracking.session import Session

__all__ = ["HtmlRender"]


class HtmlRender:
    """Renders a notebook papermill is executing, in ``session``'s background thread.

    Give :meth:`hooks` to papermill (nbclient's ``on_notebook_start`` and ``on_cell_executed``): once the
    last code cell has run, with no cell raising on the way, a copy of the notebook is rendered at once.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._exporter = session.background(_warm_exporter)  # None while capture is held
        self._notebook: Any = None
        self._last = -1
        self._clean = True
        self._render: concurrent.futures.Future[str] | None = None

    def hooks(self) -> dict[str, Callable[..., None]]:
        """nbclient hooks, for ``papermill.execute_notebook(..., **hooks)``."""
        return {"on_notebook_start": self._started, "on_cell_executed": self._executed}

    def html(self, executed: Any) -> str:
        """The HTML of ``executed``: the render started when its last cell ran cleanly, or a new one (after an
        error, a timeout). Raises what nbconvert raises."""
        if self._render is not None:
            return self._render.result()
        return self._to_html(executed)

    def _started(self, notebook: Any) -> None:
        self._notebook = notebook
        code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.source.strip()]
        self._last = code[-1] if code else -1

    def _executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        if not execute_reply or execute_reply.get("content", {}).get("status") != "ok":
            self._clean = False
        if cell_index == self._last and self._clean and self._notebook is not None:
            self._render = self._session.background(self._to_html, copy.deepcopy(self._notebook))

    def _to_html(self, notebook: Any) -> str:
        exporter = self._exporter.result() if self._exporter is not None else _warm_exporter()
        body, _ = exporter.from_notebook_node(notebook)
        return str(body)


def _warm_exporter() -> Any:
    """An HTML exporter that has already rendered a small notebook (templates, lexers and all loaded)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    cell = nbformat.v4.new_code_cell("x = 1\nprint(x)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    warm = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# *warm*"), cell])
    warm.metadata["language_info"] = {"name": "python"}
    exporter.from_notebook_node(warm)
    return exporter
