/**
 * The model registry tab: registered models, a model's versions with their aliases and gate
 * history, and promotion of a version to an alias through the same gates as
 * `nbmlops models promote` (the server applies them; a refusal leaves the registry unchanged).
 */

import * as React from 'react';

import { getModel, listModels, promote } from './api';
import { formatTime, splitExpressions } from './model';
import { IModelDetails, IModelSummary, IPromotionResult } from './types';

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
        <table className="nbmlops-lab-table">
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
                <td>{model.latest_version ?? ''}</td>
                <td>
                  {Object.entries(model.aliases)
                    .map(([alias, version]) => `@${alias}=v${version}`)
                    .join(' ')}
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
  return (
    <div className="nbmlops-lab-model" data-model={details.name}>
      <table className="nbmlops-lab-table">
        <thead>
          <tr>
            <th>Version</th>
            <th>Aliases</th>
            <th>Created</th>
            <th>Run</th>
          </tr>
        </thead>
        <tbody>
          {details.versions.map(version => (
            <React.Fragment key={String(version.version)}>
              <tr>
                <td>v{version.version}</td>
                <td>{version.aliases.map(alias => `@${alias}`).join(' ')}</td>
                <td>{formatTime(version.created)}</td>
                <td>
                  <code title={version.run_id ?? ''}>{(version.run_id ?? '').slice(0, 8)}</code>
                </td>
              </tr>
              {version.decisions.map((decision, i) => (
                <tr key={`d${i}`} className="nbmlops-lab-decision">
                  <td />
                  <td colSpan={3}>
                    {decision.accepted ? '\u2713' : '\u2717'} @{decision.alias} {formatTime(decision.at)}
                    {decision.by ? ` by ${decision.by}` : ''}
                    {decision.reason ? `: ${decision.reason}` : ''}
                    <ul>
                      {decision.checks.map((check, j) => (
                        <li key={j} className={check.passed ? 'nbmlops-lab-check-passed' : 'nbmlops-lab-check-failed'}>
                          {check.passed ? '\u2713' : '\u2717'} {check.name}: {check.message}
                        </li>
                      ))}
                    </ul>
                  </td>
                </tr>
              ))}
            </React.Fragment>
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

function PromoteForm(props: { name: string; versions: string[]; onDone: () => void }): JSX.Element {
  const [version, setVersion] = React.useState(props.versions[0] ?? '');
  const [alias, setAlias] = React.useState('champion');
  const [gates, setGates] = React.useState('');
  const [beat, setBeat] = React.useState('');
  const [allowNew, setAllowNew] = React.useState(false);
  const [busy, setBusy] = React.useState(false);
  const [result, setResult] = React.useState<IPromotionResult | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setResult(null);
    setError(null);
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
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="nbmlops-lab-promote" onSubmit={submit}>
      <h4>Promote</h4>
      <label>
        Version{' '}
        <select value={version} onChange={event => setVersion(event.target.value)}>
          {props.versions.map(v => (
            <option key={v} value={v}>
              v{v}
            </option>
          ))}
        </select>
      </label>
      <label>
        Alias <input value={alias} onChange={event => setAlias(event.target.value)} required />
      </label>
      <label>
        Gates, one a line
        <textarea
          value={gates}
          placeholder="accuracy >= 0.9"
          onChange={event => setGates(event.target.value)}
        />
      </label>
      <label>
        Beat, one a line (ALIAS:METRIC[:max|min])
        <textarea value={beat} placeholder="champion:accuracy" onChange={event => setBeat(event.target.value)} />
      </label>
      <label className="nbmlops-lab-inline">
        <input type="checkbox" checked={allowNew} onChange={event => setAllowNew(event.target.checked)} /> Allow
        new evaluation data
      </label>
      <button className="jp-mod-styled jp-mod-accept" type="submit" disabled={busy || !version || !alias.trim()}>
        {busy ? 'Checking gates…' : 'Promote'}
      </button>
      {error && <div className="nbmlops-lab-error">{error}</div>}
      {result && (
        <div className={result.accepted ? 'nbmlops-lab-accepted' : 'nbmlops-lab-refused'}>
          {result.accepted
            ? `v${version} is now @${alias.trim()}`
            : `Refused: ${result.error ?? 'a gate failed'}; the registry is unchanged`}
        </div>
      )}
    </form>
  );
}
