"""Helpers of the headless-run and Models browser tests: one JupyterLab for a whole test file, started beside a
registration of two model versions into its store, and what a person would see checked from the page: a caret
under the right character, a link in the link colour; the sidebar widened as a person drags it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.lab import Lab, clean_env, own_store, start_lab

MODEL = "wine-classifier"
REGISTER_TIMEOUT_S = 300

REGISTER = """
import numpy as np
import nbmlops
from sklearn.dummy import DummyClassifier

evaluation = np.arange(12, dtype=float).reshape(6, 2)
for accuracy, f1 in ((0.95, 0.91), (0.82, 0.78)):
    model = DummyClassifier().fit([[0, 1], [1, 0]], [0, 1])
    with nbmlops.track("train") as run:
        run.log_metrics({"accuracy": accuracy, "f1": f1})
        nbmlops.register(model, NAME, evaluation_data=evaluation, timeout=120)
nbmlops.flush(60)
"""


@contextlib.contextmanager
def lab_with_models(root: Path, base: Path, request: pytest.FixtureRequest, model: str) -> Iterator[Lab]:
    """JupyterLab on ``root`` with its own store (see :func:`start_lab`) while the model versions of
    :data:`REGISTER` go into that store as ``model`` (another process: the server never loads a model); yields
    once they are in."""
    tracking_uri = own_store(base / "store")
    script = f"NAME = {model!r}\n" + textwrap.dedent(REGISTER)
    registering = subprocess.Popen([sys.executable, "-c", script], cwd=root,
                                   env=clean_env(tracking_uri, NBMLOPS_EXPERIMENT="models"), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    try:
        with start_lab(root, base / "jupyter", request, tracking_uri=tracking_uri) as lab:
            output, _ = registering.communicate(timeout=REGISTER_TIMEOUT_S)
            assert registering.returncode == 0, f"registering the model versions failed:\n{output}"
            yield lab
    finally:
        if registering.poll() is None:
            registering.kill()
            registering.wait()


def widen_sidebar(page, width: int) -> None:
    """Drag the handle between the left sidebar and the main area until the sidebar is ``width`` pixels wide,
    as a person would to give the Experiments panel more room."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    assert box is not None, "no handle beside the left sidebar"
    panel = page.locator("#nbmlops-experiments").bounding_box()
    assert panel is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(panel["x"] + width, y, steps=5)
    page.mouse.up()


#: The horizontal centres of the character at ``position`` of the gate's text and of the caret, in pixels.
_CARET = """
(root) => {
  const text = root.querySelector('.nbmlops-lab-gate-text').firstChild;
  const pointer = root.querySelector('.nbmlops-lab-gate-pointer').firstChild;
  const caretAt = pointer.textContent.indexOf('^');
  const centre = (node, start, end) => {
    const range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, end);
    const box = range.getBoundingClientRect();
    return box.left + box.width / 2;
  };
  // the text's characters may be outside the basic plane: the caret's column counts characters
  const units = Array.from(text.textContent).slice(0, caretAt).join('').length;
  const next = units < text.textContent.length ? units + Array.from(text.textContent.slice(units))[0].length : units;
  const caret = document.createRange();
  caret.setStart(pointer, caretAt);
  caret.setEnd(pointer, caretAt + 1);
  const caretBox = caret.getBoundingClientRect();
  let under;
  if (next > units) {
    under = centre(text, units, next);
  } else {  // past the end: where the next character would stand
    const whole = document.createRange();
    whole.selectNodeContents(text);
    under = whole.getBoundingClientRect().right + caretBox.width / 2;
  }
  return {
    character: next > units ? text.textContent.slice(units, next) : '',
    underX: under,
    caretX: caretBox.left + caretBox.width / 2,
    font: getComputedStyle(root.querySelector('.nbmlops-lab-gate-caret')).fontFamily,
    uiFont: getComputedStyle(document.body).fontFamily,
  };
}
"""


def caret_alignment(error) -> dict:
    """Where the caret of a gate error (a Playwright locator) stands against the character it points at."""
    return error.evaluate(_CARET)


#: The computed colour of ``element`` and of JupyterLab's link colour, as the page resolves them.
_LINK_COLOUR = """
(element) => {
  const probe = document.createElement('span');
  probe.style.color = 'var(--jp-content-link-color)';
  document.body.appendChild(probe);
  const link = getComputedStyle(probe).color;
  probe.remove();
  return { own: getComputedStyle(element).color, link, href: element.getAttribute('href') };
}
"""


def assert_looks_like_a_link(locator) -> None:
    """``locator`` is drawn in JupyterLab's link colour (a link that looks like text is never clicked)."""
    found = locator.evaluate(_LINK_COLOUR)
    assert found["own"] == found["link"], f"not in the link colour: {found}"
