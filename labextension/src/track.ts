/**
 * `%%track` from the notebook: a command (also in the cell toolbar and the cell context menu)
 * that adds or removes the magic on the active cell, and a mark on every cell that has runs
 * showing the status of its newest run.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';

import { trackIcon } from './icons';
import { hasTrack, statusKind, toggleTrack } from './model';
import { ExperimentsState } from './state';

export const TOGGLE_TRACK = 'nbmlops:toggle-track';

/** The attribute on a cell's node holding its newest run's status family (styled in base.css). */
export const STATUS_ATTRIBUTE = 'data-nbmlops-status';

export function addTrackCommand(app: JupyterFrontEnd, tracker: INotebookTracker): void {
  const { commands } = app;
  const activeCode = () => {
    const cell = tracker.activeCell;
    return cell && cell.model.type === 'code' ? cell : null;
  };
  commands.addCommand(TOGGLE_TRACK, {
    label: 'Toggle %%track on Cell',
    caption: 'Record this cell as an MLflow run (adds or removes %%track)',
    icon: trackIcon,
    isEnabled: () => activeCode() !== null,
    isVisible: () => activeCode() !== null,
    isToggled: () => {
      const cell = activeCode();
      return cell !== null && hasTrack(cell.model.sharedModel.getSource());
    },
    execute: () => {
      const cell = activeCode();
      if (!cell) {
        return;
      }
      const shared = cell.model.sharedModel;
      shared.setSource(toggleTrack(shared.getSource()));
      commands.notifyCommandChanged(TOGGLE_TRACK);
    }
  });
  tracker.activeCellChanged.connect(() => commands.notifyCommandChanged(TOGGLE_TRACK));
}

/** Keep the active notebook's cells marked with the status of their newest run. */
export function markCellStatuses(tracker: INotebookTracker, state: ExperimentsState): void {
  const mark = () => {
    const panel = tracker.currentWidget;
    if (!panel || panel !== state.panel) {
      return;
    }
    for (const cell of panel.content.widgets) {
      const status = state.statuses.get(cell.model.id);
      if (status) {
        cell.node.setAttribute(STATUS_ATTRIBUTE, statusKind(status));
      } else {
        cell.node.removeAttribute(STATUS_ATTRIBUTE);
      }
    }
  };
  state.changed.connect(mark);
  tracker.currentChanged.connect((_, panel) => {
    // new cells get their widgets after the model's change is announced: mark on the next frame
    panel?.content.model?.cells.changed.connect(() => requestAnimationFrame(mark));
  });
}
