/**
 * The Experiments panel (left sidebar): the active notebook's runs grouped by cell, a run's
 * details (its exception when it failed, curves of its metric series, artifacts as links with image
 * previews), two runs compared, the notebook's headless runs, the model registry and the model
 * servers (deployments). When the
 * tracking store cannot be read, an error state says why, with a Retry button.
 */

import { ReactWidget, UseSignal, refreshIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { artifactUrl, getRun } from './api';
import { experimentsIcon } from './icons';
import {
  ISeriesGroup,
  compareRuns,
  curveGeometry,
  formatDelta,
  formatDuration,
  formatShortTime,
  formatTime,
  formatValue,
  groupLabel,
  IDiffRow,
  isImageArtifact,
  keyMetrics,
  keyParams,
  orderMetrics,
  orderParams,
  runHeading,
  safeHref,
  seriesGroups,
  statusKind,
  toggleCompareSelection,
  visibleRows
} from './model';
import { DeploymentsView } from './deployments';
import { JobsSection } from './jobs';
import { ModelsView } from './models';
import { ExperimentsState } from './state';
import { StoreError } from './storeError';
import { IRunDetails, IRunSummary } from './types';

export const PANEL_ID = 'nbmlops-experiments';

/** The most image artifacts a run's details preview. */
const MAX_PREVIEWS = 6;

type Tab = 'runs' | 'models' | 'deployments';

const TAB_TITLES: Record<Tab, string> = { runs: 'Runs', models: 'Models', deployments: 'Deployments' };

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

  /** Show the Runs, the Models or the Deployments tab. */
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
          {(Object.keys(TAB_TITLES) as Tab[]).map(tab => (
            <button
              key={tab}
              role="tab"
              aria-selected={this._tab === tab}
              className={`nbmlops-lab-tab${this._tab === tab ? ' nbmlops-lab-mod-active' : ''}`}
              onClick={() => this.showTab(tab)}
            >
              {TAB_TITLES[tab]}
            </button>
          ))}
        </div>
        {this._tab === 'runs' ? (
          <UseSignal signal={this._state.changed}>
            {() => <RunsView state={this._state} commands={this._commands} />}
          </UseSignal>
        ) : this._tab === 'models' ? (
          <ModelsView />
        ) : (
          <DeploymentsView />
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
    <div className="nbmlops-lab-runs" aria-busy={state.loading}>
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
      {state.error && (
        <StoreError error={state.error} retrying={state.loading} onRetry={() => void state.refresh()} />
      )}
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
  const params = keyParams(run.params);
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
          <span className="nbmlops-lab-run-name" title={run.name || run.run_id}>
            {run.name || run.run_id.slice(0, 8)}
          </span>
          <span className="nbmlops-lab-run-time" title={formatTime(run.start_time) + (duration ? ` (${duration})` : '')}>
            {formatShortTime(run.start_time)}
          </span>
        </button>
      </div>
      {(metrics.length > 0 || params.length > 0) && (
        <div className="nbmlops-lab-run-summary">
          {metrics.map(([name, value]) => (
            <span key={`m-${name}`} className="nbmlops-lab-chip nbmlops-lab-chip-metric" title={`metric ${name}`}>
              {name}={formatValue(value)}
            </span>
          ))}
          {params.map(([label, name]) => (
            <span key={`p-${name}`} className="nbmlops-lab-chip nbmlops-lab-chip-param" title={`param ${name}`}>
              {label}={formatValue(run.params[name])}
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
  const [attempt, setAttempt] = React.useState(0);

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
  }, [props.runId, props.notebook, attempt]);

  if (error) {
    return (
      <div className="nbmlops-lab-details">
        <StoreError error={error} retrying={false} onRetry={() => setAttempt(attempt + 1)} />
      </div>
    );
  }
  if (!details) {
    return <div className="nbmlops-lab-details nbmlops-lab-loading">Loading…</div>;
  }
  const href = safeHref(details.ui_url);
  const took = formatDuration(details.start_time, details.end_time);
  return (
    <div className="nbmlops-lab-details" data-run-id={details.run_id}>
      {details.error && (
        <div className="nbmlops-lab-run-error" role="note">
          <span className="nbmlops-lab-run-error-type">{details.error.type ?? 'Error'}</span>
          {details.error.message && <span className="nbmlops-lab-run-error-message">: {details.error.message}</span>}
          {details.error.traceback && (
            <a
              className="nbmlops-lab-artifact-link nbmlops-lab-traceback-link"
              href={artifactUrl(details.run_id, details.error.traceback, props.notebook)}
              target="_blank"
              rel="noopener noreferrer"
            >
              traceback
            </a>
          )}
        </div>
      )}
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
        {took && (
          <>
            <dt>Took</dt>
            <dd>{took}</dd>
          </>
        )}
      </dl>
      {href && (
        <a className="nbmlops-lab-mlflow-link" href={href} target="_blank" rel="noopener noreferrer">
          Open in MLflow UI
        </a>
      )}
      <Curves groups={seriesGroups(details.series)} />
      <KeyValueTable title="Metrics" values={details.metrics} order={orderMetrics} />
      <KeyValueTable title="Params" values={details.params} order={orderParams} />
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
      <Artifacts details={details} notebook={props.notebook} />
    </div>
  );
}

/** A run's metric series as small line charts, one per metric (its train/val/test splits together). */
function Curves(props: { groups: ISeriesGroup[] }): JSX.Element | null {
  if (props.groups.length === 0) {
    return null;
  }
  return (
    <>
      <h4>Curves</h4>
      <div className="nbmlops-lab-curves">
        {props.groups.map(group => (
          <Curve key={group.title} group={group} />
        ))}
      </div>
    </>
  );
}

const CURVE_WIDTH = 240;
const CURVE_HEIGHT = 64;

function Curve(props: { group: ISeriesGroup }): JSX.Element | null {
  const { group } = props;
  const geometry = curveGeometry(group.lines, CURVE_WIDTH, CURVE_HEIGHT);
  if (!geometry) {
    return null;
  }
  return (
    <figure className="nbmlops-lab-curve" data-metric={group.title}>
      <figcaption>
        <span className="nbmlops-lab-curve-title">{group.title}</span>
        <span className="nbmlops-lab-curve-range">
          {formatValue(geometry.min)} – {formatValue(geometry.max)}
        </span>
      </figcaption>
      <svg
        viewBox={`0 0 ${CURVE_WIDTH} ${CURVE_HEIGHT}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${group.lines.map(line => line.name).join(', ')} over steps ${geometry.first} to ${geometry.last}`}
      >
        {geometry.paths.map((points, i) => (
          <polyline
            key={group.lines[i].name}
            className={`nbmlops-lab-curve-line nbmlops-lab-curve-line-${i}`}
            points={points}
            fill="none"
            vectorEffect="non-scaling-stroke"
          />
        ))}
      </svg>
      <div className="nbmlops-lab-curve-legend">
        {group.lines.map((line, i) => {
          const last = line.points[line.points.length - 1];
          return (
            <span key={line.name} className={`nbmlops-lab-curve-key nbmlops-lab-curve-key-${i}`}>
              {line.name} {formatValue(last[1])}
            </span>
          );
        })}
        <span className="nbmlops-lab-curve-steps">
          steps {geometry.first}–{geometry.last}
        </span>
      </div>
    </figure>
  );
}

/** The run's artifact files as links served by the server extension, with previews of its images. */
function Artifacts(props: { details: IRunDetails; notebook: string }): JSX.Element | null {
  const { details, notebook } = props;
  if (details.artifacts.length === 0) {
    return null;
  }
  const images = details.artifacts.filter(isImageArtifact).slice(0, MAX_PREVIEWS);
  return (
    <>
      <h4>Artifacts</h4>
      {images.length > 0 && (
        <div className="nbmlops-lab-previews">
          {images.map(artifact => (
            <a
              key={artifact}
              href={artifactUrl(details.run_id, artifact, notebook)}
              target="_blank"
              rel="noopener noreferrer"
              title={artifact}
            >
              <img
                className="nbmlops-lab-preview"
                src={artifactUrl(details.run_id, artifact, notebook)}
                alt={artifact}
                loading="lazy"
              />
            </a>
          ))}
        </div>
      )}
      <ul className="nbmlops-lab-artifacts">
        {details.artifacts.map(artifact => (
          <li key={artifact}>
            <a
              className="nbmlops-lab-artifact-link"
              href={artifactUrl(details.run_id, artifact, notebook)}
              target="_blank"
              rel="noopener noreferrer"
              title={artifact}
            >
              {artifact}
            </a>
          </li>
        ))}
        {details.artifacts_truncated && <li className="nbmlops-lab-empty">… more in the MLflow UI</li>}
      </ul>
    </>
  );
}

function KeyValueTable(props: {
  title: string;
  values: Record<string, unknown>;
  order: (names: readonly string[]) => string[];
}): JSX.Element | null {
  const keys = props.order(Object.keys(props.values));
  if (keys.length === 0) {
    return null;
  }
  return (
    <>
      <h4>{props.title}</h4>
      <table className="nbmlops-lab-table nbmlops-lab-kv">
        <tbody>
          {keys.map(key => (
            <tr key={key}>
              <td className="nbmlops-lab-key" title={key}>
                {key}
              </td>
              <td title={formatValue(props.values[key])}>{formatValue(props.values[key])}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function RunHeading(props: { run: IRunSummary }): JSX.Element {
  const heading = runHeading(props.run);
  return (
    <th className="nbmlops-lab-compare-run" title={heading.title}>
      <span className="nbmlops-lab-compare-name">{heading.name}</span>
      <span className="nbmlops-lab-compare-meta nbmlops-lab-compare-time">{heading.time}</span>
      <code className="nbmlops-lab-compare-meta nbmlops-lab-compare-id">{heading.id}</code>
    </th>
  );
}

function Comparison(props: { a: IRunSummary; b: IRunSummary; onClose: () => void }): JSX.Element {
  const [onlyDifferences, setOnlyDifferences] = React.useState(true);
  const { params, metrics } = compareRuns(props.a, props.b);
  const shownMetrics = visibleRows(metrics, onlyDifferences);
  const shownParams = visibleRows(params, onlyDifferences);
  const hidden = shownMetrics.hidden + shownParams.hidden;
  const rows = (diff: IDiffRow[]) =>
    diff.map(row => (
      <tr key={row.key} className={row.changed ? 'nbmlops-lab-mod-changed' : ''}>
        <td className="nbmlops-lab-key" title={row.key}>
          {row.key}
        </td>
        <td title={formatValue(row.a)}>{formatValue(row.a)}</td>
        <td title={formatValue(row.b)}>{formatValue(row.b)}</td>
        <td className="nbmlops-lab-delta" title={row.delta === null ? '' : formatValue(row.delta)}>
          {formatDelta(row.delta)}
        </td>
      </tr>
    ));
  const section = (title: string, diff: IDiffRow[]) =>
    diff.length > 0 && (
      <>
        <tr className="nbmlops-lab-table-section">
          <td colSpan={4}>{title}</td>
        </tr>
        {rows(diff)}
      </>
    );
  return (
    <section className="nbmlops-lab-compare">
      <h3>
        <span>Compare</span>
        <button className="nbmlops-lab-link-button" onClick={props.onClose}>
          Close
        </button>
      </h3>
      <label className="nbmlops-lab-compare-toggle">
        <input
          type="checkbox"
          checked={onlyDifferences}
          onChange={event => setOnlyDifferences(event.target.checked)}
        />
        only differences
      </label>
      <table className="nbmlops-lab-table nbmlops-lab-compare-table">
        <colgroup>
          <col className="nbmlops-lab-col-key" />
          <col />
          <col />
          <col className="nbmlops-lab-col-delta" />
        </colgroup>
        <thead>
          <tr>
            <th />
            <RunHeading run={props.a} />
            <RunHeading run={props.b} />
            <th>Δ</th>
          </tr>
        </thead>
        <tbody>
          {section('Metrics', shownMetrics.rows)}
          {section('Params', shownParams.rows)}
        </tbody>
      </table>
      {hidden > 0 && (
        <div className="nbmlops-lab-compare-hidden">
          {hidden} identical {hidden === 1 ? 'value' : 'values'} hidden
        </div>
      )}
      {onlyDifferences && shownMetrics.rows.length + shownParams.rows.length === 0 && (
        <div className="nbmlops-lab-empty">The two runs have the same params and metrics.</div>
      )}
    </section>
  );
}
