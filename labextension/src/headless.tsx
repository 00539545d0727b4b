/**
 * Run headlessly: a dialog listing the active notebook's declared parameters with their
 * defaults, which starts `nbmlops run` on the server; the Experiments panel then follows the
 * run's progress and links to the executed notebook.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { cancelJob, getParameters, startJob } from './api';
import { PANEL_ID } from './experiments';
import { IParameterField, changedParameters, jobSummary, parameterFields } from './model';
import { ExperimentsState } from './state';
import { IDeclaredParameter } from './types';

export const RUN_HEADLESS = 'nbmlops:run-headless';
export const CANCEL_JOB = 'nbmlops:cancel-job';

/** The dialog's body: one input per declared parameter; `getValue()` gives the texts typed. */
class ParametersForm extends ReactWidget implements Dialog.IBodyWidget<Record<string, string>> {
  constructor(notebook: string, fields: IParameterField[], texts: Record<string, string>, errors: string[]) {
    super();
    this.addClass('nbmlops-ParametersForm');
    this._notebook = notebook;
    this._fields = fields;
    this._texts = { ...texts };
    this._errors = errors;
  }

  getValue(): Record<string, string> {
    return { ...this._texts };
  }

  protected render(): JSX.Element {
    return (
      <ParameterInputs
        notebook={this._notebook}
        fields={this._fields}
        initial={this._texts}
        errors={this._errors}
        onChange={texts => (this._texts = texts)}
      />
    );
  }

  private _notebook: string;
  private _fields: IParameterField[];
  private _texts: Record<string, string>;
  private _errors: string[];
}

function ParameterInputs(props: {
  notebook: string;
  fields: IParameterField[];
  initial: Record<string, string>;
  errors: string[];
  onChange: (texts: Record<string, string>) => void;
}): JSX.Element {
  const [texts, setTexts] = React.useState(props.initial);
  const set = (name: string, value: string) => {
    const next = { ...texts, [name]: value };
    setTexts(next);
    props.onChange(next);
  };
  return (
    <div className="nbmlops-lab-parameters">
      <p>
        Executes <code>{props.notebook}</code> with <code>nbmlops run</code> on the server, as its own MLflow run.
      </p>
      {props.errors.map(error => (
        <div key={error} className="nbmlops-lab-error">
          {error}
        </div>
      ))}
      {props.fields.length === 0 ? (
        <p className="nbmlops-lab-empty">
          This notebook declares no parameters (papermill convention: a cell tagged <code>parameters</code>). It runs
          with the values it has.
        </p>
      ) : (
        <table className="nbmlops-lab-table">
          <tbody>
            {props.fields.map(field => (
              <tr key={field.name} className="nbmlops-lab-parameter" data-name={field.name}>
                <td>
                  <label htmlFor={`nbmlops-lab-param-${field.name}`}>{field.name}</label>
                </td>
                <td>
                  {field.input === 'checkbox' ? (
                    <input
                      id={`nbmlops-lab-param-${field.name}`}
                      name={field.name}
                      type="checkbox"
                      checked={texts[field.name] === 'true'}
                      onChange={event => set(field.name, event.target.checked ? 'true' : 'false')}
                    />
                  ) : (
                    <input
                      id={`nbmlops-lab-param-${field.name}`}
                      name={field.name}
                      className="jp-mod-styled"
                      type="text"
                      inputMode={field.input === 'number' ? 'decimal' : undefined}
                      value={texts[field.name] ?? ''}
                      onChange={event => set(field.name, event.target.value)}
                    />
                  )}
                </td>
                <td className="nbmlops-lab-parameter-help">
                  <span className="nbmlops-lab-type">{field.type}</span>
                  {field.help ? ` ${field.help}` : ''}
                  <span className="nbmlops-lab-default" title="default in the notebook">
                    {' '}
                    (default {field.source})
                  </span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** Ask for the parameters until they are valid; null if the dialog was cancelled. */
async function askParameters(
  notebook: string,
  declared: IDeclaredParameter[]
): Promise<Record<string, unknown> | null> {
  const fields = parameterFields(declared);
  let texts: Record<string, string> = Object.fromEntries(fields.map(field => [field.name, field.initial]));
  let errors: string[] = [];
  for (;;) {
    const result = await showDialog({
      title: 'Run Notebook Headlessly',
      body: new ParametersForm(notebook, fields, texts, errors),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
      focusNodeSelector: 'input'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    texts = result.value;
    const checked = changedParameters(fields, texts);
    if (checked.errors.length === 0) {
      return checked.values;
    }
    errors = checked.errors;
  }
}

export function addHeadlessCommands(app: JupyterFrontEnd, tracker: INotebookTracker, state: ExperimentsState): void {
  const { commands } = app;
  commands.addCommand(RUN_HEADLESS, {
    label: 'Run Notebook Headlessly',
    caption: 'Execute the saved notebook with nbmlops run on the server, with parameters',
    isEnabled: () => tracker.currentWidget !== null,
    execute: async () => {
      const panel = tracker.currentWidget;
      if (!panel) {
        return;
      }
      try {
        await panel.context.ready;
        if (panel.context.model.dirty) {
          await panel.context.save();
        }
        const notebook = panel.context.path;
        const declared = await getParameters(notebook);
        const parameters = await askParameters(notebook, declared.parameters);
        if (parameters === null) {
          return;
        }
        const job = await startJob(notebook, parameters);
        state.addJob(job);
        app.shell.activateById(PANEL_ID);
      } catch (error) {
        await showErrorMessage('Run Notebook Headlessly', error as Error);
      }
    }
  });

  commands.addCommand(CANCEL_JOB, {
    label: 'Cancel Headless Run',
    execute: async args => {
      const jobId = args.jobId as string | undefined;
      if (!jobId) {
        return;
      }
      try {
        state.addJob(await cancelJob(jobId));
      } catch (error) {
        await showErrorMessage('Cancel Headless Run', error as Error);
      }
    }
  });

  state.jobEnded.connect((_, job) => {
    const name = job.notebook.split('/').pop();
    const actions: Notification.IAction[] = job.output
      ? [
          {
            label: 'Open executed notebook',
            callback: () => void commands.execute('docmanager:open', { path: job.output })
          }
        ]
      : [];
    const text = `Headless run of ${name}: ${jobSummary(job)}`;
    if (job.status === 'finished') {
      Notification.success(text, { actions, autoClose: 8000 });
    } else {
      Notification.error(text, { actions, autoClose: false });
    }
  });
}
