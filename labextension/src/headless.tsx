/**
 * Run headlessly: a dialog listing the active notebook's declared parameters with their
 * defaults, gates and a timeout, which starts `nbmlops run` on the server; the Experiments panel
 * then follows the run's progress and shows its result (see `jobs.tsx`).
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { cancelJob, getParameters, startJob } from './api';
import { PANEL_ID } from './experiments';
import { GateErrorView } from './gateError';
import { IParameterField, changedParameters, parameterFields, splitExpressions } from './model';
import { ApiError } from './request';
import {
  basename,
  gateSyntaxError,
  jobErrorLine,
  jobHeadline,
  keyMetricsFirst,
  metricText,
  parseTimeout
} from './results';
import { ExperimentsState } from './state';
import { IDeclaredParameter, IGateSyntaxError, IJob } from './types';

export const RUN_HEADLESS = 'nbmlops:run-headless';
export const CANCEL_JOB = 'nbmlops:cancel-job';

/** What the dialog holds: the parameters' texts, the gates and the timeout as typed. */
interface IRunForm {
  texts: Record<string, string>;
  gates: string;
  timeout: string;
}

/** Why the last Start was refused: lines, and a gate that does not parse (with where). */
interface IRefusal {
  errors: string[];
  gate: { message: string; error: IGateSyntaxError | null } | null;
}

/** The dialog's body: one input per declared parameter, gates and a timeout; `getValue()` gives the texts. */
class ParametersForm extends ReactWidget implements Dialog.IBodyWidget<IRunForm> {
  constructor(notebook: string, fields: IParameterField[], form: IRunForm, refusal: IRefusal) {
    super();
    this.addClass('nbmlops-ParametersForm');
    this._notebook = notebook;
    this._fields = fields;
    this._form = { ...form, texts: { ...form.texts } };
    this._refusal = refusal;
  }

  getValue(): IRunForm {
    return { ...this._form, texts: { ...this._form.texts } };
  }

  protected render(): JSX.Element {
    return (
      <ParameterInputs
        notebook={this._notebook}
        fields={this._fields}
        initial={this._form}
        refusal={this._refusal}
        onChange={form => (this._form = form)}
      />
    );
  }

  private _notebook: string;
  private _fields: IParameterField[];
  private _form: IRunForm;
  private _refusal: IRefusal;
}

function ParameterInputs(props: {
  notebook: string;
  fields: IParameterField[];
  initial: IRunForm;
  refusal: IRefusal;
  onChange: (form: IRunForm) => void;
}): JSX.Element {
  const [form, setForm] = React.useState(props.initial);
  const texts = form.texts;
  const update = (next: IRunForm) => {
    setForm(next);
    props.onChange(next);
  };
  const set = (name: string, value: string) => update({ ...form, texts: { ...texts, [name]: value } });
  return (
    <div className="nbmlops-lab-parameters">
      <p>
        Executes <code>{props.notebook}</code> with <code>nbmlops run</code> on the server, as its own MLflow run.
      </p>
      {props.refusal.errors.map(error => (
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
      <fieldset className="nbmlops-lab-run-options">
        <legend>Gates and timeout</legend>
        <label htmlFor="nbmlops-lab-gates">Gates</label>
        <div>
          <input
            id="nbmlops-lab-gates"
            name="gates"
            className="jp-mod-styled nbmlops-lab-gate-input"
            type="text"
            spellCheck={false}
            placeholder="accuracy >= 0.9 and loss < 0.5"
            value={form.gates}
            onChange={event => update({ ...form, gates: event.target.value })}
          />
          <div className="nbmlops-lab-option-help">
            conditions on the run&apos;s metrics (<code>nbmlops run --gate</code>); several separated by{' '}
            <code>;</code>. A gate that fails fails the run.
          </div>
          {props.refusal.gate && (
            <GateErrorView message={props.refusal.gate.message} error={props.refusal.gate.error} />
          )}
        </div>
        <label htmlFor="nbmlops-lab-timeout">Timeout</label>
        <div>
          <input
            id="nbmlops-lab-timeout"
            name="timeout"
            className="jp-mod-styled nbmlops-lab-timeout-input"
            type="text"
            inputMode="decimal"
            placeholder="none"
            value={form.timeout}
            onChange={event => update({ ...form, timeout: event.target.value })}
          />{' '}
          seconds
          <div className="nbmlops-lab-option-help">
            a cell that runs longer stops the run as timed out (<code>nbmlops run --timeout</code>).
          </div>
        </div>
      </fieldset>
    </div>
  );
}

const NO_REFUSAL: IRefusal = { errors: [], gate: null };

/**
 * Ask for the parameters, gates and timeout and start the run, until the server takes it; the job, or null if
 * the dialog was cancelled. A refusal (a parameter of the wrong type, a gate that does not parse) opens the
 * dialog again with what was typed and why.
 */
async function startFromDialog(notebook: string, declared: IDeclaredParameter[]): Promise<IJob | null> {
  const fields = parameterFields(declared);
  let form: IRunForm = {
    texts: Object.fromEntries(fields.map(field => [field.name, field.initial])),
    gates: '',
    timeout: ''
  };
  let refusal = NO_REFUSAL;
  for (;;) {
    const result = await showDialog({
      title: 'Run Notebook Headlessly',
      body: new ParametersForm(notebook, fields, form, refusal),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
      focusNodeSelector: 'input'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    form = result.value;
    const checked = changedParameters(fields, form.texts);
    const timeout = parseTimeout(form.timeout);
    const errors = [...checked.errors, ...(timeout.ok ? [] : [timeout.error])];
    if (errors.length > 0 || !timeout.ok) {
      refusal = { errors, gate: null };
      continue;
    }
    try {
      return await startJob(notebook, checked.values, { gates: splitExpressions(form.gates), timeout: timeout.value });
    } catch (error) {
      if (!(error instanceof ApiError) || (error.status !== 400 && error.status !== 413)) {
        throw error;
      }
      const gate = gateSyntaxError(error.body);
      refusal = gate
        ? { errors: [], gate: { message: error.reason, error: gate } }
        : { errors: [error.reason], gate: null };
    }
  }
}

/** `Headless run of train.ipynb finished in 12 s: accuracy 0.93` (the notification when it ends). */
function endedText(job: IJob): string {
  const metrics = keyMetricsFirst(job.metrics, job.gates ?? [], 2).shown.map(([name, value]) =>
    metricText(name, value)
  );
  const error = jobErrorLine(job);
  const gates = (job.gate_results ?? []).filter(gate => !gate.passed).map(gate => gate.message);
  return (
    `Headless run of ${basename(job.notebook)} ${jobHeadline(job)}` +
    (metrics.length ? `: ${metrics.join(', ')}` : '') +
    [...gates, ...(error ? [error] : [])].map(line => `. ${line}`).join('')
  );
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
        const job = await startFromDialog(notebook, declared.parameters);
        if (job === null) {
          return;
        }
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
    const actions: Notification.IAction[] = job.output
      ? [
          {
            label: 'Open executed notebook',
            callback: () => void commands.execute('docmanager:open', { path: job.output })
          }
        ]
      : [];
    const text = endedText(job);
    if (job.status === 'finished') {
      Notification.success(text, { actions, autoClose: 8000 });
    } else {
      Notification.error(text, { actions, autoClose: false });
    }
  });
}
