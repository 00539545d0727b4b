"""The runs table in the browser: the escaped HTML of :meth:`~nbmlops.widgets.runs.RunsView.to_html`, made
interactive by a few lines of JavaScript (an anywidget): row checkboxes select runs, the toggle of a parent run
shows or hides the runs nested under it, a click on a run's name asks for its details.

What the user does comes back as the widget's traits (``selected``, ``expanded``, ``detail``), which the
dashboard observes; the HTML itself is made and escaped in Python, never in the browser. Without a frontend the
same traits can be set from Python (as a test does).
"""

from __future__ import annotations

import anywidget
import traitlets

__all__ = ["RunsTable"]

_ESM = r"""
function render({ model, el }) {
  const ids = (key) => new Set(model.get(key) || []);
  const rows = () => [...el.querySelectorAll('tr[data-run-id]')];
  function applyExpanded() {
    const open = ids('expanded');
    for (const tr of rows()) {
      const above = tr.dataset.ancestors ? tr.dataset.ancestors.split(' ') : [];
      tr.classList.toggle('nbmlops-collapsed', above.some((id) => !open.has(id)));
    }
    for (const button of el.querySelectorAll('button[data-toggle]')) {
      const shown = open.has(button.dataset.toggle);
      button.setAttribute('aria-expanded', shown ? 'true' : 'false');
      button.textContent = shown ? '\u25BE' : '\u25B8';
    }
  }
  function applySelected() {
    const chosen = ids('selected');
    for (const tr of rows()) {
      const on = chosen.has(tr.dataset.runId);
      tr.classList.toggle('nbmlops-selected', on);
      const box = tr.querySelector('input[data-select]');
      if (box) box.checked = on;
    }
    const all = el.querySelector('input[data-select-all]');
    if (all) {
      const visible = rows().filter((tr) => !tr.classList.contains('nbmlops-collapsed'));
      all.checked = visible.length > 0 && visible.every((tr) => chosen.has(tr.dataset.runId));
    }
  }
  function draw() {
    el.innerHTML = model.get('value');
    applyExpanded();
    applySelected();
  }
  function onClick(event) {
    const toggle = event.target.closest('button[data-toggle]');
    if (toggle) {
      const open = ids('expanded');
      const id = toggle.dataset.toggle;
      if (open.has(id)) open.delete(id); else open.add(id);
      model.set('expanded', [...open]);
      model.save_changes();
      applyExpanded();
      return;
    }
    const detail = event.target.closest('[data-detail]');
    if (detail) {
      event.preventDefault();
      const id = detail.dataset.detail;
      model.set('detail', model.get('detail') === id ? '' : id);
      model.save_changes();
    }
  }
  function onChange(event) {
    const box = event.target;
    if (!box.matches('input[type=checkbox]')) return;
    const chosen = ids('selected');
    if (box.dataset.selectAll) {
      for (const tr of rows()) {
        if (tr.classList.contains('nbmlops-collapsed')) continue;
        if (box.checked) chosen.add(tr.dataset.runId); else chosen.delete(tr.dataset.runId);
      }
    } else if (box.dataset.select) {
      if (box.checked) chosen.add(box.dataset.select); else chosen.delete(box.dataset.select);
    } else {
      return;
    }
    model.set('selected', [...chosen]);
    model.save_changes();
    applySelected();
  }
  el.addEventListener('click', onClick);
  el.addEventListener('change', onChange);
  model.on('change:value', draw);
  model.on('change:expanded', applyExpanded);
  model.on('change:selected', applySelected);
  draw();
  return () => {
    model.off('change:value', draw);
    model.off('change:expanded', applyExpanded);
    model.off('change:selected', applySelected);
  };
}
export default { render };
"""


class RunsTable(anywidget.AnyWidget):
    """The runs table: ``value`` is its HTML; ``selected`` the ticked runs, ``expanded`` the runs whose nested
    runs are shown, ``detail`` the run whose details are asked for (empty: none), all run ids."""

    _esm = _ESM
    value = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    expanded = traitlets.List(traitlets.Unicode()).tag(sync=True)
    detail = traitlets.Unicode("").tag(sync=True)
