/**
 * The Deployments tab's data and wording, free of JupyterLab (jest tests them): one model server as
 * `GET /nbmlops/api/deployments` describes it, and how its figures, drift state and last swap read.
 */

import { StatusKind, formatShortTime, formatValue } from './model';

/** `serving`: RUNNING with a fresh heartbeat; `dead`: KILLED, FAILED or a stale heartbeat; `stopped`: FINISHED. */
export type DeploymentState = 'serving' | 'dead' | 'stopped';

/** `ok`, `drifted`, or `never checked` when no `nbmlops monitor --traffic` ran for the model. */
export type DriftState = 'ok' | 'drifted' | 'never checked';

/** One deployment of `GET /nbmlops/api/deployments` (times in epoch milliseconds). */
export interface IDeployment {
  model: string;
  alias: string;
  url: string;
  version: number | null;
  state: DeploymentState;
  status: string;
  run_id: string;
  experiment_id: string;
  started: number | null;
  ended: number | null;
  heartbeat: number | null;
  since: number | null;
  requests: number | null;
  errors: number | null;
  error_rate: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  latency_p99_ms: number | null;
  shadow: string | null;
  last_swap: { text: string; at: number | null; from: number | null; to: number | null } | null;
  drift: { state: DriftState; checked: number | null; run_id: string | null; version: number | null };
  host: string;
  pid: number | null;
  run_url: string | null;
}

/** `GET /nbmlops/api/deployments` */
export interface IDeploymentList {
  deployments: IDeployment[];
  stale_after_s: number;
}

/** The command the empty state offers. */
export const START_COMMAND = 'nbmlops serve NAME@champion';

/** The colour of a state's badge, in the panel's run-status colours. */
export function stateKind(state: string): StatusKind {
  return state === 'serving' ? 'finished' : state === 'dead' ? 'failed' : 'unknown';
}

/** `2 of 3 serving`, or `no deployments`. */
export function deploymentsSummary(deployments: readonly IDeployment[]): string {
  if (deployments.length === 0) {
    return 'no deployments';
  }
  const serving = deployments.filter(d => d.state === 'serving').length;
  return `${serving} of ${deployments.length} serving`;
}

/** `1,234 requests · 2 % errors`, or an em dash before the first delivery of figures. */
export function trafficText(d: Pick<IDeployment, 'requests' | 'error_rate'>): string {
  if (d.requests === null || d.requests === undefined) {
    return '\u2014';
  }
  const requests = `${Math.round(d.requests).toLocaleString('en-US')} request${Math.round(d.requests) === 1 ? '' : 's'}`;
  return d.error_rate === null || d.error_rate === undefined ? requests : `${requests} · ${percent(d.error_rate)} errors`;
}

/** An error rate as a percentage: `0 %`, `0.25 %`, `2 %`, `12 %`. */
export function percent(rate: number): string {
  const value = rate * 100;
  return value >= 10 ? `${Math.round(value)} %` : `${Number(value.toPrecision(2))} %`;
}

/** `p50 3.25 ms · p95 11.5 ms`, or an em dash. */
export function latencyText(d: Pick<IDeployment, 'latency_p50_ms' | 'latency_p95_ms'>): string {
  const parts: string[] = [];
  if (d.latency_p50_ms !== null && d.latency_p50_ms !== undefined) {
    parts.push(`p50 ${formatValue(d.latency_p50_ms)} ms`);
  }
  if (d.latency_p95_ms !== null && d.latency_p95_ms !== undefined) {
    parts.push(`p95 ${formatValue(d.latency_p95_ms)} ms`);
  }
  return parts.length ? parts.join(' · ') : '\u2014';
}

/** Under the state: since when it serves, when it was stopped, or why it counts as dead. */
export function stateDetail(d: IDeployment, now: Date = new Date()): string {
  if (d.state === 'serving') {
    return d.since !== null ? `since ${formatShortTime(d.since, now)}` : '';
  }
  if (d.state === 'dead') {
    if (d.status === 'RUNNING') {
      return `no heartbeat since ${formatShortTime(d.heartbeat ?? d.started, now)}`;
    }
    return d.ended !== null ? `${d.status.toLowerCase()} at ${formatShortTime(d.ended, now)}` : d.status.toLowerCase();
  }
  return d.ended !== null ? `at ${formatShortTime(d.ended, now)}` : '';
}

/** `v2 · 10:32:05` of the monitoring run that set the drift state; empty when never checked. */
export function driftDetail(d: Pick<IDeployment, 'drift'>, now: Date = new Date()): string {
  if (d.drift.state === 'never checked') {
    return '';
  }
  const version = d.drift.version !== null ? `v${d.drift.version} · ` : '';
  return `${version}${formatShortTime(d.drift.checked, now)}`;
}

/** `v1 -> v2 · 10:30:00`, or an em dash when the server never swapped. */
export function swapText(d: Pick<IDeployment, 'last_swap'>, now: Date = new Date()): string {
  if (!d.last_swap) {
    return '\u2014';
  }
  return d.last_swap.at !== null ? `${d.last_swap.text} · ${formatShortTime(d.last_swap.at, now)}` : d.last_swap.text;
}
