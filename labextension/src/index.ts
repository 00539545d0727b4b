/**
 * nbmlops in JupyterLab: the Experiments panel, the %%track toggle, headless runs, the tracking
 * store's status, the model registry and the model servers, over the nbmlops server extension's REST API.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { ExperimentsPanel, PANEL_ID } from './experiments';
import { RUN_HEADLESS, addHeadlessCommands } from './headless';
import { ExperimentsState } from './state';
import { StoreStatusItem } from './statusbar';
import { TOGGLE_TRACK, addTrackCommand, markCellStatuses } from './track';

const OPEN_PANEL = 'nbmlops:open-experiments';
const OPEN_MODELS = 'nbmlops:open-models';
const OPEN_DEPLOYMENTS = 'nbmlops:open-deployments';
const CATEGORY = 'nbmlops';

/** The plugin id names the settings schema (schema/plugin.json) that adds the cell toolbar button. */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbmlops:plugin',
  description: 'Experiments panel, %%track toggle, headless runs and model registry for nbmlops.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    const state = new ExperimentsState(tracker);
    const panel = new ExperimentsPanel(state, app.commands);
    app.shell.add(panel, 'left', { rank: 600 });

    app.commands.addCommand(OPEN_PANEL, {
      label: 'Show Experiments',
      caption: 'The runs of the active notebook, grouped by cell',
      execute: () => {
        panel.showTab('runs');
        app.shell.activateById(PANEL_ID);
      }
    });
    app.commands.addCommand(OPEN_MODELS, {
      label: 'Show Model Registry',
      caption: 'Registered models, their versions and aliases; promote through gates',
      execute: () => {
        panel.showTab('models');
        app.shell.activateById(PANEL_ID);
      }
    });

    app.commands.addCommand(OPEN_DEPLOYMENTS, {
      label: 'Show Deployments',
      caption: 'The model servers (nbmlops serve): address, version, state, traffic, latency, drift, last swap',
      execute: () => {
        panel.showTab('deployments');
        app.shell.activateById(PANEL_ID);
      }
    });

    addTrackCommand(app, tracker);
    markCellStatuses(tracker, state);
    addHeadlessCommands(app, tracker, state);

    if (palette) {
      for (const command of [OPEN_PANEL, OPEN_MODELS, OPEN_DEPLOYMENTS, TOGGLE_TRACK, RUN_HEADLESS]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
    if (statusBar) {
      statusBar.registerStatusItem('nbmlops:store-status', {
        item: new StoreStatusItem(),
        align: 'left',
        rank: 100
      });
    }
  }
};

export default plugin;
