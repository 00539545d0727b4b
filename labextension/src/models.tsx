/**
 * The model registry tab: registered models; a model's versions, each with its source run's metrics (so a
 * version is never promoted blind), its aliases, lineage (run, notebook, cell, model class, data) and creation
 * time, and its gate history; and promotion of a version to an alias through the same gates as
 * `nbmlops models promote` (the server applies them; a refusal leaves the registry unchanged).
 */

import * as React from 'react';

import { getModel, listModels, promote } from './api';
import { GateErrorView } from './gateError';
import { formatShortTime, formatTime, formatValue, safeHref, splitExpressions, statusKind } from './model';
import { ApiError } from './request';
import { basename, gateSyntaxError, shortClass, shortId } from './results';
import {
  IGateCheck,
  IGateSyntaxError,
  IModelDetails,
  IModelSummary,
  IModelVersion,
  IPromotionResult
} from './types';

/** At most this many metrics a version shows; the rest are counted. */
const METRICS_SHOWN = 6;

function message(error: unknown): string {
  return (error as Error)?.message || String(error);
}

export function ModelsView(): JSX.Element {
  const [models, setModels] = React.useState<IModelSummary[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [chosen, setChosen] = React.useState<string | null>(null);

  const load = React.useCallback(() => {
    setError(null);
    listModels().then(setModels, reason => setError(message(reason)));
  }, []);
  React.useEffect(load, [load]);

  return (
    <div className="nbmlops-lab-models">
      <div className="nbmlops-lab-toolbar">
        <label>
          Model{' '}
          <select
            className="nbmlops-lab-model-select"
            value={chosen ?? ''}
            onChange={event => setChosen(event.target.value || null)}
          >
            <option value="">{models && models.length === 0 ? 'no registered models' : 'choose…'}</option>
            {(models ?? []).map(model => (
              <option key={model.name} value={model.name}>
                {model.name}
              </option>
            ))}
          </select>
        </label>
        <button className="nbmlops-lab-link-button" onClick={load}>
          Refresh
        </button>
      </div>
      {error && <div className="nbmlops-lab-error">{error}</div>}
      {models && !chosen && models.length > 0 && (
        <table className="nbmlops-lab-table nbmlops-lab-models-table">
          <thead>
            <tr>
              <th>Model</th>
              <th>Latest</th>
              <th>Aliases</th>
            </tr>
          </thead>
          <tbody>
            {models.map(model => (
              <tr key={model.name}>
                <td>
                  <button className="nbmlops-lab-link-button" onClick={() => setChosen(model.name)}>
                    {model.name}
                  </button>
                </td>
                <td>{model.latest_version !== null ? `v${model.latest_version}` : ''}</td>
                <td>
                  {Object.entries(model.aliases).map(([alias, version]) => (
                    <span key={alias} className="nbmlops-lab-alias">
                      @{alias} v{version}
                    </span>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {chosen && <ModelDetails key={chosen} name={chosen} onChanged={load} />}
    </div>
  );
}

/** Every metric name of the versions' source runs, sorted: each version lists its values in this order. */
function metricNames(versions: readonly IModelVersion[]): string[] {
  const names = new Set<string>();
  for (const version of versions) {
    Object.keys(version.run?.metrics ?? {}).forEach(name => names.add(name));
  }
  return Array.from(names).sort();
}

function ModelDetails(props: { name: string; onChanged: () => void }): JSX.Element {
  const [details, setDetails] = React.useState<IModelDetails | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  const load = React.useCallback(() => {
    getModel(props.name).then(setDetails, reason => setError(message(reason)));
  }, [props.name]);
  React.useEffect(load, [load]);

  if (error) {
    return <div className="nbmlops-lab-error">{error}</div>;
  }
  if (!details) {
    return <div className="nbmlops-lab-loading">Loading…</div>;
  }
  const names = metricNames(details.versions);
  return (
    <div className="nbmlops-lab-model" data-model={details.name}>
      <table className="nbmlops-lab-table nbmlops-lab-versions">
        <thead>
          <tr>
            <th>Version</th>
            <th>Metrics of its run</th>
          </tr>
        </thead>
        <tbody>
          {details.versions.map(version => (
            <VersionRows key={String(version.version)} version={version} names={names} />
          ))}
        </tbody>
      </table>
      <PromoteForm
        name={details.name}
        versions={details.versions.map(version => String(version.version))}
        onDone={() => {
          load();
          props.onChanged();
        }}
      />
    </div>
  );
}

function VersionRows(props: { version: IModelVersion; names: string[] }): JSX.Element {
  const { version, names } = props;
  const run = version.run;
  const metrics = names.filter(name => typeof run?.metrics[name] === 'number');
  const hidden = metrics.length - METRICS_SHOWN;
  return (
    <>
      <tr className="nbmlops-lab-version" data-version={String(version.version)}>
        <td className="nbmlops-lab-version-name">
          <strong>v{version.version}</strong>
          {version.aliases.map(alias => (
            <span key={alias} className="nbmlops-lab-alias">
              @{alias}
            </span>
          ))}
          <div className="nbmlops-lab-version-created" title={`created ${formatTime(version.created)}`}>
            {formatShortTime(version.created)}
          </div>
        </td>
        <td className="nbmlops-lab-version-metrics">
          {run === null || run === undefined ? (
            <span className="nbmlops-lab-muted">
              {version.run_id ? 'its run is not in the store' : 'no source run'}
            </span>
          ) : metrics.length === 0 ? (
            <span className="nbmlops-lab-muted">no metrics logged</span>
          ) : (
            <div className="nbmlops-lab-version-metric-list">
              {metrics.slice(0, METRICS_SHOWN).map(name => (
                <span key={name} className="nbmlops-lab-version-metric" data-metric={name}>
                  <span className="nbmlops-lab-version-metric-name">{name}</span>{' '}
                  {formatValue(run.metrics[name])}
                </span>
              ))}
              {hidden > 0 && (
                <span
                  className="nbmlops-lab-version-more"
                  title={metrics
                    .slice(METRICS_SHOWN)
                    .map(name => `${name} ${formatValue(run.metrics[name])}`)
                    .join('\n')}
                >
                  +{hidden} more
                </span>
              )}
            </div>
          )}
        </td>
      </tr>
      <tr className="nbmlops-lab-version-lineage">
        <td colSpan={2}>
          <Lineage version={version} />
        </td>
      </tr>
      {version.decisions.map((decision, i) => (
        <tr key={`d${i}`} className="nbmlops-lab-decision">
          <td colSpan={2}>
            <details>
              <summary>
                <span className={decision.accepted ? 'nbmlops-lab-check-passed' : 'nbmlops-lab-check-failed'}>
                  {decision.accepted ? '\u2713 promoted to' : '\u2717 refused for'} @{decision.alias}
                </span>{' '}
                <span title={formatTime(decision.at)}>{formatShortTime(decision.at)}</span>
                {decision.by ? ` by ${decision.by}` : ''}
              </summary>
              {decision.reason && !decision.accepted && (
                <div className="nbmlops-lab-decision-reason">{decision.reason}</div>
              )}
              <Checks checks={decision.checks} />
            </details>
          </td>
        </tr>
      ))}
    </>
  );
}

/** Where a version comes from: its run (linked to the MLflow UI), notebook, cell, model class and data. */
function Lineage(props: { version: IModelVersion }): JSX.Element {
  const { version } = props;
  const run = version.run;
  const lineage = version.lineage;
  const href = safeHref(run?.ui_url);
  const trained = lineage?.features || Object.values(lineage?.training ?? {})[0];
  const evaluated = Object.values(lineage?.evaluation ?? {})[0];
  const parts: JSX.Element[] = [];
  if (version.run_id) {
    const label = `${run?.name || 'run'} ${shortId(version.run_id)}`;
    parts.push(
      <span key="run">
        from{' '}
        {href ? (
          <a className="nbmlops-lab-version-run" href={href} target="_blank" rel="noopener noreferrer">
            {label}
          </a>
        ) : (
          <code>{label}</code>
        )}
        {run && run.status !== 'FINISHED' && (
          <span className={`nbmlops-lab-status nbmlops-lab-status-${statusKind(run.status)}`}>
            {run.status.toLowerCase()}
          </span>
        )}
      </span>
    );
  }
  if (lineage?.notebook) {
    parts.push(
      <span key="notebook" title={lineage.notebook}>
        {basename(lineage.notebook)}
        {lineage.cell_id ? ` cell ${shortId(lineage.cell_id)}` : ''}
      </span>
    );
  }
  if (lineage?.model_class) {
    parts.push(
      <span key="class" title={lineage.model_class}>
        {shortClass(lineage.model_class)}
      </span>
    );
  }
  if (trained) {
    parts.push(
      <span key="trained" title={`training data fingerprint ${trained}`}>
        trained on <code>{shortId(trained)}</code>
      </span>
    );
  }
  if (evaluated) {
    parts.push(
      <span key="evaluated" title={`evaluation data fingerprint ${evaluated}`}>
        evaluated on <code>{shortId(evaluated)}</code>
      </span>
    );
  }
  if (lineage?.git_commit) {
    parts.push(
      <span key="commit" title={`git commit ${lineage.git_commit}`}>
        commit <code>{lineage.git_commit.slice(0, 7)}</code>
      </span>
    );
  }
  return (
    <div className="nbmlops-lab-lineage">
      {parts.map((part, i) => (
        <React.Fragment key={i}>
          {i > 0 && ' \u00b7 '}
          {part}
        </React.Fragment>
      ))}
    </div>
  );
}

/** Each check of a promotion, passed or failed, with its message. */
function Checks(props: { checks: readonly IGateCheck[] }): JSX.Element | null {
  if (props.checks.length === 0) {
    return null;
  }
  return (
    <ul className="nbmlops-lab-checks">
      {props.checks.map((check, j) => (
        <li key={j} className={check.passed ? 'nbmlops-lab-check-passed' : 'nbmlops-lab-check-failed'}>
          {check.passed ? '\u2713' : '\u2717'} {check.kind ? `${check.kind}: ` : ''}
          {check.message}
        </li>
      ))}
    </ul>
  );
}

function PromoteForm(props: { name: string; versions: string[]; onDone: () => void }): JSX.Element {
  const [version, setVersion] = React.useState(props.versions[0] ?? '');
  const [alias, setAlias] = React.useState('champion');
  const [gates, setGates] = React.useState('');
  const [beat, setBeat] = React.useState('');
  const [allowNew, setAllowNew] = React.useState(false);
  const [busy, setBusy] = React.useState(false);
  const [result, setResult] = React.useState<IPromotionResult | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [gateError, setGateError] = React.useState<IGateSyntaxError | null>(null);

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setResult(null);
    setError(null);
    setGateError(null);
    try {
      const outcome = await promote(props.name, {
        version: Number(version),
        alias: alias.trim(),
        gates: splitExpressions(gates),
        beat: splitExpressions(beat),
        allow_new_evaluation_data: allowNew
      });
      setResult(outcome);
      props.onDone();
    } catch (reason) {
      setError(message(reason));
      setGateError(reason instanceof ApiError ? gateSyntaxError(reason.body) : null);
    } finally {
      setBusy(false);
    }
  };

  const checks = ((result?.promotion?.checks as IGateCheck[] | undefined) ?? []).filter(
    check => check && typeof check.message === 'string'
  );
  return (
    <form className="nbmlops-lab-promote" onSubmit={submit}>
      <h4>Promote</h4>
      <div className="nbmlops-lab-promote-row">
        <label>
          Version
          <select value={version} onChange={event => setVersion(event.target.value)}>
            {props.versions.map(v => (
              <option key={v} value={v}>
                v{v}
              </option>
            ))}
          </select>
        </label>
        <label>
          Alias
          <input value={alias} onChange={event => setAlias(event.target.value)} required spellCheck={false} />
        </label>
      </div>
      <label>
        Gates, one a line
        <textarea
          value={gates}
          placeholder="accuracy >= 0.9"
          spellCheck={false}
          onChange={event => setGates(event.target.value)}
        />
      </label>
      <label>
        Beat, one a line (ALIAS:METRIC[:max|min])
        <textarea
          value={beat}
          placeholder="champion:accuracy"
          spellCheck={false}
          onChange={event => setBeat(event.target.value)}
        />
      </label>
      <label className="nbmlops-lab-inline">
        <input type="checkbox" checked={allowNew} onChange={event => setAllowNew(event.target.checked)} /> Allow
        new evaluation data
      </label>
      <button className="jp-mod-styled jp-mod-accept" type="submit" disabled={busy || !version || !alias.trim()}>
        {busy ? 'Checking gates…' : 'Promote'}
      </button>
      {error &&
        (gateError ? (
          <GateErrorView message={error} error={gateError} />
        ) : (
          <div className="nbmlops-lab-error">{error}</div>
        ))}
      {result && (
        <div className={`nbmlops-lab-promotion ${result.accepted ? 'nbmlops-lab-accepted' : 'nbmlops-lab-refused'}`}>
          <div className="nbmlops-lab-promotion-verdict">
            {result.accepted
              ? `v${version} is now @${alias.trim()}`
              : `Refused: ${result.error ?? 'a gate failed'}; the registry is unchanged`}
          </div>
          <Checks checks={checks} />
        </div>
      )}
    </form>
  );
}
