/** The Deployments tab's wording (src/deploymentsModel.ts): figures, state details, drift, swaps. */

import {
  IDeployment,
  deploymentsSummary,
  driftDetail,
  latencyText,
  percent,
  stateDetail,
  stateKind,
  swapText,
  trafficText
} from '../deploymentsModel';

const NOW = new Date(2026, 11, 6, 12, 0, 0);
const AT = new Date(2026, 11, 6, 10, 30, 0).getTime();

function deployment(overrides: Partial<IDeployment> = {}): IDeployment {
  return {
    model: 'iris',
    alias: 'champion',
    url: 'http://127.0.0.1:8080',
    version: 2,
    state: 'serving',
    status: 'RUNNING',
    run_id: 'a'.repeat(32),
    experiment_id: '1',
    started: AT,
    ended: null,
    heartbeat: AT,
    since: AT,
    requests: 1234,
    errors: 25,
    error_rate: 0.0203,
    latency_p50_ms: 3.25,
    latency_p95_ms: 11.5,
    latency_p99_ms: 19,
    shadow: null,
    last_swap: null,
    drift: { state: 'never checked', checked: null, run_id: null, version: null },
    host: '127.0.0.1',
    pid: 1,
    run_url: null,
    ...overrides
  };
}

describe('a deployment', () => {
  it('reads its traffic as requests and an error rate', () => {
    expect(trafficText(deployment())).toBe('1,234 requests · 2 % errors');
    expect(trafficText(deployment({ requests: 1, error_rate: 0 }))).toBe('1 request · 0 % errors');
    expect(trafficText(deployment({ requests: null, error_rate: null }))).toBe('\u2014');
    expect(percent(0.0025)).toBe('0.25 %');
    expect(percent(0.125)).toBe('13 %');
  });

  it('reads its latency as p50 and p95', () => {
    expect(latencyText(deployment())).toBe('p50 3.25 ms · p95 11.5 ms');
    expect(latencyText(deployment({ latency_p50_ms: null, latency_p95_ms: null }))).toBe('\u2014');
  });

  it('says since when it serves, or why it is dead', () => {
    expect(stateDetail(deployment(), NOW)).toBe('since 10:30:00');
    expect(stateDetail(deployment({ state: 'dead' }), NOW)).toBe('no heartbeat since 10:30:00');
    expect(stateDetail(deployment({ state: 'dead', status: 'KILLED', ended: AT }), NOW)).toBe('killed at 10:30:00');
    expect(stateDetail(deployment({ state: 'stopped', status: 'FINISHED', ended: AT }), NOW)).toBe('at 10:30:00');
    expect([stateKind('serving'), stateKind('dead'), stateKind('stopped')]).toEqual(['finished', 'failed', 'unknown']);
  });

  it('shows the drift check and the last swap with their times', () => {
    expect(driftDetail(deployment(), NOW)).toBe('');
    const drifted = deployment({ drift: { state: 'drifted', checked: AT, run_id: 'b', version: 2 } });
    expect(driftDetail(drifted, NOW)).toBe('v2 · 10:30:00');
    expect(swapText(deployment(), NOW)).toBe('\u2014');
    expect(swapText(deployment({ last_swap: { text: 'v1 -> v2', at: AT, from: 1, to: 2 } }), NOW)).toBe(
      'v1 -> v2 · 10:30:00'
    );
  });

  it('counts the serving ones', () => {
    expect(deploymentsSummary([])).toBe('no deployments');
    expect(deploymentsSummary([deployment(), deployment({ state: 'dead' })])).toBe('1 of 2 serving');
  });
});
