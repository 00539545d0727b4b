/**
 * The Experiments panel (left sidebar): the active notebook's runs grouped by cell, a run's
 * details, two runs compared, the notebook's headless runs, and the model registry.
 */

import { ReactWidget, UseSignal, refreshIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { getRun } from './api';
import { experimentsIcon } from './icons';
import {
  compareRuns,
  formatDuration,
  formatShortTime,
  formatTime,
  formatValue,
  groupLabel,
  IDiffRow,
  keyMetrics,
  safeHref,
  statusKind,
  toggleCompareSelection
} from './model';
import { JobsSection } from './jobs';
import { ModelsView } from './models';
import { ExperimentsState } from './state';
import { IRunDetails, IRunSummary } from './types';

export const PANEL_ID = 'nbmlops-experiments';

type Tab = 'runs' | 'models';

export class ExperimentsPanel extends ReactWidget {
  constructor(state: ExperimentsState, commands: CommandRegistry) {
    super();
    this._state = state;
    this._commands = commands;
    this.id = PANEL_ID;
    this.addClass('nbmlops-ExperimentsPanel');
    this.title.icon = experimentsIcon;
    this.title.caption = 'Experiments (nbmlops)';
  }

  /** Show the Runs or the Models tab. */
  showTab(tab: Tab): void {
    this._tab = tab;
    this.update();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._state.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._state.setVisible(false);
  }

  protected render(): JSX.Element {
    return (
      <div className="nbmlops-lab-panel">
        <div className="nbmlops-lab-tabs" role="tablist">
          {(['runs', 'models'] as Tab[]).map(tab => (
            <button
              key={tab}
              role="tab"
              aria-selected={this._tab === tab}
              className={`nbmlops-lab-tab${this._tab === tab ? ' nbmlops-lab-mod-active' : ''}`}
              onClick={() => this.showTab(tab)}
            >
              {tab === 'runs' ? 'Runs' : 'Models'}
            </button>
          ))}
        </div>
        {this._tab === 'runs' ? (
          <UseSignal signal={this._state.changed}>
            {() => <RunsView state={this._state} commands={this._commands} />}
          </UseSignal>
        ) : (
          <ModelsView />
        )}
      </div>
    );
  }

  private _state: ExperimentsState;
  private _commands: CommandRegistry;
  private _tab: Tab = 'runs';
}

/** Cell id -> its position in the notebook, for group headings. */
function cellIndex(state: ExperimentsState): Map<string, number> {
  const index = new Map<string, number>();
  const cells = state.panel?.content.model?.cells;
  if (cells) {
    for (let i = 0; i < cells.length; i++) {
      index.set(cells.get(i).id, i);
    }
  }
  return index;
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}

export function StatusBadge(props: { status: string }): JSX.Element {
  return (
    <span className={`nbmlops-lab-status nbmlops-lab-status-${statusKind(props.status)}`}>
      {props.status.toLowerCase()}
    </span>
  );
}

function RunsView(props: { state: ExperimentsState; commands: CommandRegistry }): JSX.Element {
  const { state, commands } = props;
  const [selected, setSelected] = React.useState<string | null>(null);
  const [compare, setCompare] = React.useState<string[]>([]);
  const path = state.notebookPath;

  React.useEffect(() => {
    setSelected(null);
    setCompare([]);
  }, [path]);

  if (!path) {
    return <div className="nbmlops-lab-empty">Open a notebook to see its runs.</div>;
  }
  const index = cellIndex(state);
  const byId = new Map(state.runs.map(run => [run.run_id, run]));
  const compared = compare.map(id => byId.get(id)).filter((run): run is IRunSummary => !!run);

  return (
    <div className="nbmlops-lab-runs">
      <div className="nbmlops-lab-toolbar">
        <span className="nbmlops-lab-notebook" title={path}>
          {basename(path)}
        </span>
        <button
          className="nbmlops-lab-icon-button"
          title="Refresh runs"
          aria-label="Refresh runs"
          onClick={() => void state.refresh()}
        >
          <refreshIcon.react tag="span" className={state.loading ? 'nbmlops-lab-spin' : ''} />
        </button>
      </div>
      {state.error && <div className="nbmlops-lab-error">Runs unavailable: {state.error}</div>}
      <JobsSection jobs={state.jobs} commands={commands} onSelectRun={setSelected} />
      {compared.length === 2 && (
        <Comparison a={compared[0]} b={compared[1]} onClose={() => setCompare([])} />
      )}
      {state.groups.length === 0 && state.jobs.length === 0 && !state.loading && !state.error && (
        <div className="nbmlops-lab-empty">
          No runs yet. Load the extension with <code>%load_ext nbmlops</code> and start a cell with{' '}
          <code>%%track</code>.
        </div>
      )}
      {state.groups.map(group => (
        <section key={group.key} className="nbmlops-lab-group" data-cell-key={group.key}>
          <h3>
            <span>{groupLabel(group, index)}</span>
            <StatusBadge status={group.lastStatus} />
          </h3>
          <ul>
            {group.runs.map(run => (
              <RunItem
                key={run.run_id}
                run={run}
                notebook={path}
                selected={selected === run.run_id}
                compared={compare.includes(run.run_id)}
                onSelect={() => setSelected(selected === run.run_id ? null : run.run_id)}
                onCompare={() => setCompare(toggleCompareSelection(compare, run.run_id))}
              />
            ))}
          </ul>
        </section>
      ))}
    </div>
  );
}

function RunItem(props: {
  run: IRunSummary;
  notebook: string;
  selected: boolean;
  compared: boolean;
  onSelect: () => void;
  onCompare: () => void;
}): JSX.Element {
  const { run } = props;
  const metrics = keyMetrics(run.metrics);
  const params = Object.keys(run.params).sort().slice(0, 3);
  const duration = formatDuration(run.start_time, run.end_time);
  return (
    <li
      className={`nbmlops-lab-run${props.selected ? ' nbmlops-lab-mod-selected' : ''}`}
      data-run-id={run.run_id}
      data-status={run.status}
    >
      <div className="nbmlops-lab-run-header">
        <input
          type="checkbox"
          title="Select two runs to compare them"
          aria-label="Compare"
          checked={props.compared}
          onChange={props.onCompare}
        />
        <button className="nbmlops-lab-run-title" onClick={props.onSelect} aria-expanded={props.selected}>
          <span className={`nbmlops-lab-dot nbmlops-lab-status-${statusKind(run.status)}`} title={run.status} />
          <span className="nbmlops-lab-run-name">{run.name || run.run_id.slice(0, 8)}</span>
          <span className="nbmlops-lab-run-time" title={formatTime(run.start_time) + (duration ? ` (${duration})` : '')}>
            {formatShortTime(run.start_time)}
          </span>
        </button>
      </div>
      {(metrics.length > 0 || params.length > 0) && (
        <div className="nbmlops-lab-run-summary">
          {metrics.map(([name, value]) => (
            <span key={`m-${name}`} className="nbmlops-lab-chip nbmlops-lab-chip-metric">
              {name}={formatValue(value)}
            </span>
          ))}
          {params.map(name => (
            <span key={`p-${name}`} className="nbmlops-lab-chip nbmlops-lab-chip-param">
              {name}={formatValue(run.params[name])}
            </span>
          ))}
        </div>
      )}
      {props.selected && <RunDetails runId={run.run_id} notebook={props.notebook} />}
    </li>
  );
}

function RunDetails(props: { runId: string; notebook: string }): JSX.Element {
  const [details, setDetails] = React.useState<IRunDetails | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  React.useEffect(() => {
    let live = true;
    setDetails(null);
    setError(null);
    getRun(props.runId, props.notebook).then(
      body => live && setDetails(body),
      reason => live && setError((reason as Error).message || String(reason))
    );
    return () => {
      live = false;
    };
  }, [props.runId, props.notebook]);

  if (error) {
    return <div className="nbmlops-lab-error">{error}</div>;
  }
  if (!details) {
    return <div className="nbmlops-lab-details nbmlops-lab-loading">Loading…</div>;
  }
  const href = safeHref(details.ui_url);
  return (
    <div className="nbmlops-lab-details" data-run-id={details.run_id}>
      <dl className="nbmlops-lab-facts">
        <dt>Status</dt>
        <dd>
          <StatusBadge status={details.status} />
        </dd>
        <dt>Run</dt>
        <dd>
          <code>{details.run_id}</code>
        </dd>
        {details.experiment && (
          <>
            <dt>Experiment</dt>
            <dd>{details.experiment}</dd>
          </>
        )}
        <dt>Started</dt>
        <dd>{formatTime(details.start_time)}</dd>
        {formatDuration(details.start_time, details.end_time) && (
          <>
            <dt>Took</dt>
            <dd>{formatDuration(details.start_time, details.end_time)}</dd>
          </>
        )}
      </dl>
      {href && (
        <a className="nbmlops-lab-mlflow-link" href={href} target="_blank" rel="noopener noreferrer">
          Open in MLflow UI
        </a>
      )}
      <KeyValueTable title="Params" values={details.params} />
      <KeyValueTable title="Metrics" values={details.metrics} />
      {details.datasets.length > 0 && (
        <>
          <h4>Datasets</h4>
          <table className="nbmlops-lab-table">
            <tbody>
              {details.datasets.map(dataset => (
                <tr key={`${dataset.name}-${dataset.digest}-${dataset.context}`}>
                  <td>{dataset.name}</td>
                  <td>{dataset.context ?? ''}</td>
                  <td>
                    <code title={dataset.digest}>{dataset.digest.slice(0, 12)}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {details.artifacts.length > 0 && (
        <>
          <h4>Artifacts</h4>
          <ul className="nbmlops-lab-artifacts">
            {details.artifacts.map(artifact => (
              <li key={artifact}>
                <code>{artifact}</code>
              </li>
            ))}
          </ul>
        </>
      )}
    </div>
  );
}

function KeyValueTable(props: { title: string; values: Record<string, unknown> }): JSX.Element | null {
  const keys = Object.keys(props.values).sort();
  if (keys.length === 0) {
    return null;
  }
  return (
    <>
      <h4>{props.title}</h4>
      <table className="nbmlops-lab-table">
        <tbody>
          {keys.map(key => (
            <tr key={key}>
              <td>{key}</td>
              <td>{formatValue(props.values[key])}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function Comparison(props: { a: IRunSummary; b: IRunSummary; onClose: () => void }): JSX.Element {
  const { params, metrics } = compareRuns(props.a, props.b);
  const name = (run: IRunSummary) => run.name || run.run_id.slice(0, 8);
  const rows = (diff: IDiffRow[]) =>
    diff.map(row => (
      <tr key={row.key} className={row.changed ? 'nbmlops-lab-mod-changed' : ''}>
        <td>{row.key}</td>
        <td>{formatValue(row.a)}</td>
        <td>{formatValue(row.b)}</td>
        <td>{row.delta === null ? '' : (row.delta > 0 ? '+' : '') + formatValue(row.delta)}</td>
      </tr>
    ));
  return (
    <section className="nbmlops-lab-compare">
      <h3>
        <span>Compare</span>
        <button className="nbmlops-lab-link-button" onClick={props.onClose}>
          Close
        </button>
      </h3>
      <table className="nbmlops-lab-table">
        <thead>
          <tr>
            <th />
            <th>{name(props.a)}</th>
            <th>{name(props.b)}</th>
            <th>Δ</th>
          </tr>
        </thead>
        <tbody>
          {params.length > 0 && (
            <tr className="nbmlops-lab-table-section">
              <td colSpan={4}>Params</td>
            </tr>
          )}
          {rows(params)}
          {metrics.length > 0 && (
            <tr className="nbmlops-lab-table-section">
              <td colSpan={4}>Metrics</td>
            </tr>
          )}
          {rows(metrics)}
        </tbody>
      </table>
    </section>
  );
}
