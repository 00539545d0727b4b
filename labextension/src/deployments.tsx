/**
 * The Deployments tab: what `nbmlops serve` serves where, from the serving runs in the tracking store: each
 * `NAME@ALIAS` with its address (a link), the version serving now, its state (serving, dead, stopped),
 * traffic, error rate, latency, the drift state of its model's latest `nbmlops monitor --traffic`, the last
 * swap and its shadow alias. Serving first (the server's order). Read again every few seconds while shown,
 * and on Refresh; when the tracking store cannot be read, the panel's error state with Retry.
 */

import { refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { listDeployments } from './api';
import {
  IDeployment,
  START_COMMAND,
  deploymentsSummary,
  driftDetail,
  latencyText,
  stateDetail,
  stateKind,
  swapText,
  trafficText
} from './deploymentsModel';
import { safeHref } from './model';
import { StoreError } from './storeError';

/** Milliseconds between two readings while the tab is shown. */
const REFRESH_MS = 15_000;

function message(error: unknown): string {
  return (error as Error)?.message || String(error);
}

export function DeploymentsView(): JSX.Element {
  const [deployments, setDeployments] = React.useState<IDeployment[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [loading, setLoading] = React.useState(false);
  const node = React.useRef<HTMLDivElement>(null);

  const load = React.useCallback(() => {
    setLoading(true);
    listDeployments().then(
      found => {
        setDeployments(found);
        setError(null);
        setLoading(false);
      },
      reason => {
        setError(message(reason));
        setLoading(false);
      }
    );
  }, []);
  React.useEffect(() => {
    load();
    const timer = window.setInterval(() => {
      // only while a person can see it: a collapsed sidebar asks the store nothing
      if (node.current && node.current.offsetParent !== null) {
        load();
      }
    }, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [load]);

  return (
    <div className="nbmlops-lab-deployments" aria-busy={loading} ref={node}>
      <div className="nbmlops-lab-toolbar">
        <span className="nbmlops-lab-deployments-summary">
          {deployments ? deploymentsSummary(deployments) : loading ? 'Loading…' : ''}
        </span>
        <button
          className="nbmlops-lab-icon-button"
          title="Refresh deployments"
          aria-label="Refresh deployments"
          onClick={load}
        >
          <refreshIcon.react tag="span" className={loading ? 'nbmlops-lab-spin' : ''} />
        </button>
      </div>
      {error && (
        <StoreError title="Deployments unavailable" error={error} retrying={loading} onRetry={load} />
      )}
      {!error && deployments && deployments.length === 0 && (
        <div className="nbmlops-lab-empty nbmlops-lab-deployments-empty">
          No model is served yet. Start a server with <code>{START_COMMAND}</code> and it shows here.
        </div>
      )}
      {!error && deployments && deployments.length > 0 && (
        <ul className="nbmlops-lab-deployment-list">
          {deployments.map(deployment => (
            <DeploymentItem key={deployment.run_id} deployment={deployment} />
          ))}
        </ul>
      )}
    </div>
  );
}

function DeploymentItem(props: { deployment: IDeployment }): JSX.Element {
  const d = props.deployment;
  const reference = `${d.model}@${d.alias}`;
  const href = safeHref(d.url);
  const runHref = safeHref(d.run_url);
  const detail = stateDetail(d);
  const drift = driftDetail(d);
  return (
    <li className="nbmlops-lab-deployment" data-run-id={d.run_id} data-state={d.state}>
      <div className="nbmlops-lab-deployment-header">
        <span className={`nbmlops-lab-dot nbmlops-lab-status-${stateKind(d.state)}`} />
        <span className="nbmlops-lab-deployment-name" title={reference}>
          {reference}
        </span>
        <span
          className={`nbmlops-lab-status nbmlops-lab-status-${stateKind(d.state)} nbmlops-lab-deployment-state`}
          title={`serving run ${d.status}`}
        >
          {d.state}
        </span>
      </div>
      <div className="nbmlops-lab-deployment-address">
        {href ? (
          <a href={href} target="_blank" rel="noopener noreferrer" title={d.url}>
            {d.url}
          </a>
        ) : (
          <code title={d.url}>{d.url || '\u2014'}</code>
        )}
      </div>
      <dl className="nbmlops-lab-facts nbmlops-lab-deployment-facts">
        <dt>Version</dt>
        <dd className="nbmlops-lab-deployment-version">
          {d.version !== null ? `v${d.version}` : '\u2014'}
          {d.shadow && <span className="nbmlops-lab-deployment-shadow"> · shadow @{d.shadow}</span>}
        </dd>
        <dt>State</dt>
        <dd className="nbmlops-lab-deployment-detail">{detail || d.state}</dd>
        <dt>Traffic</dt>
        <dd className="nbmlops-lab-deployment-traffic">{trafficText(d)}</dd>
        <dt>Latency</dt>
        <dd className="nbmlops-lab-deployment-latency">{latencyText(d)}</dd>
        <dt>Drift</dt>
        <dd className="nbmlops-lab-deployment-drift">
          <span className={`nbmlops-lab-drift nbmlops-lab-drift-${d.drift.state.replace(' ', '-')}`}>
            {d.drift.state}
          </span>
          {drift && <span className="nbmlops-lab-deployment-when"> {drift}</span>}
        </dd>
        <dt>Last swap</dt>
        <dd className="nbmlops-lab-deployment-swap">{swapText(d)}</dd>
      </dl>
      {runHref && (
        <a className="nbmlops-lab-mlflow-link" href={runHref} target="_blank" rel="noopener noreferrer">
          Serving run in MLflow UI
        </a>
      )}
    </li>
  );
}
