/**
 * What a headless run (job) and a model version show, free of JupyterLab: a job's one-line state with its
 * progress and elapsed time, its key metrics (the ones its gates name first), its gates and timeout as typed in
 * the dialog, a gate syntax error's caret, and a version's metrics. The views only wire these; jest tests them.
 */

import { formatMs, formatValue, toMillis } from './model';
import { IGateSyntaxError, IJob } from './types';

// ---------------------------------------------------------------------------------------------
// A job's state, as one line

/** Milliseconds from the job's start to its end, or to `now` while it runs; null when not known. */
export function jobElapsedMs(job: IJob, now: number = Date.now()): number | null {
  if (typeof job.duration_ms === 'number') {
    return job.duration_ms;
  }
  const start = toMillis(job.started);
  if (start === null) {
    return null;
  }
  const end = toMillis(job.ended) ?? (job.status === 'queued' || job.status === 'running' ? now : null);
  return end === null ? null : Math.max(0, end - start);
}

/** A number of seconds for a limit: `3 s`, `1.5 s`, `2 min`, `1 h 30 min`. */
export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${Number(seconds.toPrecision(3))} s`;
  }
  if (seconds < 3600) {
    const minutes = Math.floor(seconds / 60);
    const rest = Math.round(seconds - minutes * 60);
    return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  }
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.round((seconds - hours * 3600) / 60);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

/**
 * The job's state in words: `starting kernel · 2 s`, `running · cell 3 of 7 · 42 s`, `finished in 12 s`,
 * `gate failed after 12 s`, `failed after 3 s`, `timed out after 3.4 s (limit 3 s)`, `cancelled after 5 s`.
 */
export function jobHeadline(job: IJob, now: number = Date.now()): string {
  const elapsed = formatMs(jobElapsedMs(job, now));
  const after = elapsed ? ` after ${elapsed}` : '';
  switch (job.status) {
    case 'queued':
      return ['starting kernel', elapsed].filter(Boolean).join(' \u00b7 ');
    case 'running': {
      const progress = job.progress;
      const cells =
        progress && progress.total > 0
          ? `cell ${Math.min(progress.done + 1, progress.total)} of ${progress.total}`
          : null;
      return ['running', cells, elapsed].filter(Boolean).join(' \u00b7 ');
    }
    case 'finished':
      return elapsed ? `finished in ${elapsed}` : 'finished';
    case 'failed':
      return (jobGateFailed(job) ? 'gate failed' : 'failed') + after;
    case 'timeout':
      return `timed out${after}` + (job.timeout ? ` (limit ${formatSeconds(job.timeout)} a cell)` : '');
    case 'cancelled':
      return `cancelled${after}`;
    case 'killed':
      return `killed${after}`;
    default:
      return String(job.status);
  }
}

/** Whether the job ran to its end and only its gates failed. */
export function jobGateFailed(job: IJob): boolean {
  return job.status === 'failed' && (job.gate_results ?? []).some(gate => !gate.passed);
}

/**
 * The job's error worth a line of its own: none when it finished, or when its gates say it all; the exit code of
 * a failure that says nothing else.
 */
export function jobErrorLine(job: IJob): string | null {
  if (job.status === 'finished' || jobGateFailed(job)) {
    return null;
  }
  if (!job.error) {
    return job.status === 'failed' && job.exit_code !== null ? `exit code ${job.exit_code}` : null;
  }
  return job.error;
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** A gate's tokens: a backticked name, a number (so `1e-3` is not read as a name), or a plain name. */
const GATE_TOKEN = /`((?:[^`]|``)*)`|([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_./-]*)/g;

/** The metric names a gate's text mentions, in order (`and` is the grammar's, not a metric). */
export function gateMetricNames(gates: readonly string[]): string[] {
  const names: string[] = [];
  for (const gate of gates) {
    const tokens = new RegExp(GATE_TOKEN.source, 'g');
    for (let match = tokens.exec(gate); match !== null; match = tokens.exec(gate)) {
      const name = match[1] !== undefined ? match[1].replace(/``/g, '`') : match[3];
      if (name === undefined || (match[3] !== undefined && name.toLowerCase() === 'and')) {
        continue;
      }
      if (!names.includes(name)) {
        names.push(name);
      }
    }
  }
  return names;
}

/**
 * The metrics to show first, at most `limit`: those the gates name, then the rest by name; `more` counts the
 * ones left out. Missing values (null) are skipped.
 */
export function keyMetricsFirst(
  metrics: Record<string, number | null> | null | undefined,
  gates: readonly string[] = [],
  limit = 4
): { shown: Array<[string, number]>; more: number } {
  const present = Object.keys(metrics ?? {}).filter(name => typeof metrics![name] === 'number');
  const named = gateMetricNames(gates).filter(name => present.includes(name));
  const rest = present.filter(name => !named.includes(name)).sort();
  const order = [...named, ...rest];
  return {
    shown: order.slice(0, limit).map(name => [name, metrics![name] as number]),
    more: Math.max(0, order.length - limit)
  };
}

/** `accuracy 0.9` */
export function metricText(name: string, value: number): string {
  return `${name} ${formatValue(value)}`;
}

// ---------------------------------------------------------------------------------------------
// Gates and timeout, as typed in the dialog

/** The timeout typed in seconds: null when empty, else a number > 0, or why not. */
export function parseTimeout(text: string): { ok: true; value: number | null } | { ok: false; error: string } {
  const raw = text.trim();
  if (raw === '') {
    return { ok: true, value: null };
  }
  const value = Number(raw);
  if (!/^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(raw) || !Number.isFinite(value) || value <= 0) {
    return { ok: false, error: `timeout must be a number of seconds > 0, got ${JSON.stringify(raw)}` };
  }
  return { ok: true, value };
}

/**
 * The gate and a caret line under the character at `position`, for a monospace block: every whitespace
 * character is shown as one space (a tab would otherwise be several columns wide), and positions count
 * characters (code points) as the server does.
 */
export function gateCaret(error: IGateSyntaxError): { text: string; caret: string } {
  const characters = Array.from(error.gate).map(c => (/\s/.test(c) ? ' ' : c));
  const position = Math.max(0, Math.min(error.position, characters.length));
  return { text: characters.join(''), caret: ' '.repeat(position) + '^' };
}

/** A gate syntax error from an API error body, if it carries one. */
export function gateSyntaxError(body: unknown): IGateSyntaxError | null {
  const found = body && typeof body === 'object' ? (body as { gate_error?: unknown }).gate_error : null;
  if (!found || typeof found !== 'object') {
    return null;
  }
  const { gate, position, expected } = found as Record<string, unknown>;
  return typeof gate === 'string' && typeof position === 'number' && typeof expected === 'string'
    ? { gate, position, expected }
    : null;
}

// ---------------------------------------------------------------------------------------------
// Short forms

/** The first 8 characters of an id (a run id, a fingerprint), for text a person scans. */
export function shortId(id: string | null | undefined): string {
  return (id ?? '').slice(0, 8);
}

/** The last part of a path. */
export function basename(path: string): string {
  return path.split('/').pop() || path;
}

/** `sklearn.linear_model.LogisticRegression` -> `LogisticRegression` */
export function shortClass(name: string | null | undefined): string {
  return (name ?? '').split('.').pop() ?? '';
}
