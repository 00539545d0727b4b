import {
  formatSeconds,
  gateCaret,
  gateMetricNames,
  gateSyntaxError,
  jobElapsedMs,
  jobErrorLine,
  jobGateFailed,
  jobHeadline,
  keyMetricsFirst,
  parseTimeout,
  shortClass
} from '../results';
import { formatMs } from '../model';
import { IJob } from '../types';
import { job as baseJob } from './jobs';

const START = Date.UTC(2026, 11, 6, 9, 0, 0);

function job(overrides: Partial<IJob> = {}): IJob {
  return baseJob({ started: START, ...overrides });
}

describe('a job as one line', () => {
  it('counts a running job to now, and an ended one to its end', () => {
    expect(jobElapsedMs(job(), START + 42_000)).toBe(42_000);
    expect(jobElapsedMs(job({ status: 'finished', ended: START + 12_300 }), START + 99_000)).toBe(12_300);
    expect(jobElapsedMs(job({ status: 'finished', duration_ms: 5_000, ended: START + 12_300 }))).toBe(5_000);
    expect(jobElapsedMs(job({ started: null }))).toBeNull();
  });

  it('says where a running job is and for how long', () => {
    expect(jobHeadline(job({ status: 'queued' }), START + 2_000)).toBe('starting kernel \u00b7 2.0 s');
    const running = job({ progress: { done: 2, total: 7 } });
    expect(jobHeadline(running, START + 42_000)).toBe('running \u00b7 cell 3 of 7 \u00b7 42 s');
    expect(jobHeadline(job({ progress: { done: 7, total: 7 } }), START + 61_000)).toBe(
      'running \u00b7 cell 7 of 7 \u00b7 1 min 1 s'
    );
    expect(jobHeadline(job(), START + 500)).toBe('running \u00b7 0.5 s');
  });

  it('says how an ended job ended and after how long', () => {
    const ended = { ended: START + 12_000, duration_ms: 12_000 };
    expect(jobHeadline(job({ status: 'finished', ...ended }))).toBe('finished in 12 s');
    expect(jobHeadline(job({ status: 'failed', error: 'cell 2: ValueError: x', ...ended }))).toBe(
      'failed after 12 s'
    );
    expect(jobHeadline(job({ status: 'timeout', timeout: 3, ...ended }))).toBe(
      'timed out after 12 s (limit 3 s a cell)'
    );
    expect(jobHeadline(job({ status: 'cancelled', ...ended }))).toBe('cancelled after 12 s');
    const gated = job({
      status: 'failed',
      error: 'gate failed: ...',
      gate_results: [{ gate: 'accuracy >= 0.99', passed: false, message: 'gate "accuracy >= 0.99" failed: ...' }],
      ...ended
    });
    expect(jobHeadline(gated)).toBe('gate failed after 12 s');
    expect(jobGateFailed(gated)).toBe(true);
    expect(jobErrorLine(gated)).toBeNull(); // the gate says it
    expect(jobErrorLine(job({ status: 'failed', error: 'cell 2: ValueError: x' }))).toBe('cell 2: ValueError: x');
    expect(jobErrorLine(job({ status: 'finished', error: 'stale' }))).toBeNull();
    expect(jobErrorLine(job({ status: 'failed', exit_code: 70 }))).toBe('exit code 70');
    expect(jobErrorLine(job({ status: 'cancelled', exit_code: 130 }))).toBeNull();
  });

  it('writes durations and limits as a person reads them', () => {
    expect(formatMs(null)).toBeNull();
    expect(formatMs(400)).toBe('0.4 s');
    expect(formatMs(185_000)).toBe('3 min 5 s');
    expect(formatSeconds(3)).toBe('3 s');
    expect(formatSeconds(2.5)).toBe('2.5 s');
    expect(formatSeconds(120)).toBe('2 min');
    expect(formatSeconds(5400)).toBe('1 h 30 min');
  });
});

describe('key metrics', () => {
  it('reads the metric names a gate mentions, not its numbers or "and"', () => {
    expect(gateMetricNames(['accuracy >= 0.9 and loss < 1e-3', '0.5 < `f1 macro`', 'AND_rate > 1E5'])).toEqual([
      'accuracy',
      'loss',
      'f1 macro',
      'AND_rate'
    ]);
    expect(gateMetricNames(['val/acc > .5 AND `a``b` != -2'])).toEqual(['val/acc', 'a`b']);
  });

  it('shows the gated metrics first, then the rest by name, and counts what is left out', () => {
    const metrics = { zeta: 1, accuracy: 0.93, loss: 0.2, f1: 0.8, beta: 2, missing: null };
    expect(keyMetricsFirst(metrics, ['loss < 0.5'], 3)).toEqual({
      shown: [
        ['loss', 0.2],
        ['accuracy', 0.93],
        ['beta', 2]
      ],
      more: 2
    });
    expect(keyMetricsFirst(metrics, ['nothere > 1'], 10).shown.map(([name]) => name)).toEqual([
      'accuracy',
      'beta',
      'f1',
      'loss',
      'zeta'
    ]);
    expect(keyMetricsFirst(null)).toEqual({ shown: [], more: 0 });
  });
});

describe('the timeout as typed', () => {
  it('takes an empty timeout as none and refuses what is not seconds > 0', () => {
    expect(parseTimeout('')).toEqual({ ok: true, value: null });
    expect(parseTimeout(' 2.5 ')).toEqual({ ok: true, value: 2.5 });
    expect(parseTimeout('1e2')).toEqual({ ok: true, value: 100 });
    for (const bad of ['0', '-3', 'abc', '5s', 'Infinity', 'NaN']) {
      const parsed = parseTimeout(bad);
      expect(parsed.ok).toBe(false);
      expect(parsed.ok ? '' : parsed.error).toContain('timeout must be a number of seconds > 0');
    }
  });
});

describe('a gate syntax error', () => {
  it('puts the caret under the character at the position, counting characters', () => {
    expect(gateCaret({ gate: 'accuracy >> 0.9', position: 9, expected: 'x' })).toEqual({
      text: 'accuracy >> 0.9',
      caret: '         ^'
    });
    // a tab is one column, as the server counts it
    const tabbed = gateCaret({ gate: 'accuracy\t>= 0.9 f1', position: 16, expected: 'x' });
    expect(tabbed.text).toBe('accuracy >= 0.9 f1');
    expect(tabbed.caret.indexOf('^')).toBe(16);
    expect(tabbed.text[16]).toBe('f');
    // a character outside the basic plane is one character, not two UTF-16 units
    const astral = gateCaret({ gate: '`\u{1F600}` >> 1', position: 4, expected: 'x' });
    expect(Array.from(astral.text)[4]).toBe('>');
    expect(astral.caret).toBe('    ^');
    // at the end: the caret just past the last character
    expect(gateCaret({ gate: 'a >', position: 3, expected: 'x' }).caret).toBe('   ^');
    expect(gateCaret({ gate: 'a >', position: 99, expected: 'x' }).caret).toBe('   ^');
  });

  it('is read from an error body only when it is whole', () => {
    const gate_error = { gate: 'a >> 1', position: 2, expected: 'an operator' };
    expect(gateSyntaxError({ error: 'x', gate_error })).toEqual(gate_error);
    expect(gateSyntaxError({ error: 'x', gate_error: null })).toBeNull();
    expect(gateSyntaxError({ error: 'x', gate_error: { gate: 'a', position: '2', expected: 'b' } })).toBeNull();
    expect(gateSyntaxError('text')).toBeNull();
    expect(gateSyntaxError(null)).toBeNull();
  });
});

it('shortens a model class to its name', () => {
  expect(shortClass('sklearn.linear_model._logistic.LogisticRegression')).toBe('LogisticRegression');
  expect(shortClass(null)).toBe('');
});
