/**
 * The logic of the lab extension, free of JupyterLab: grouping runs by cell, comparing two runs,
 * toggling `%%track` on a cell's source, reading a notebook's declared parameters into form fields,
 * formatting values. The widgets only wire these to the page; jest tests them directly.
 */

import {
  IDeclaredParameter,
  IJob,
  IRunSummary,
  IStoreStatus,
  Scalar,
  Time
} from './types';

// ---------------------------------------------------------------------------------------------
// Times and values

/** Epoch milliseconds of a server time (epoch ms, epoch seconds or ISO text); null if unreadable. */
export function toMillis(time: Time | undefined): number | null {
  if (time === null || time === undefined || time === '') {
    return null;
  }
  let value: number;
  if (typeof time === 'number') {
    value = time;
  } else if (/^\s*[+-]?\d+(\.\d+)?\s*$/.test(time)) {
    value = Number(time);
  } else {
    const parsed = Date.parse(time);
    return Number.isNaN(parsed) ? null : parsed;
  }
  if (!Number.isFinite(value)) {
    return null;
  }
  // 1e11 ms is March 1973; 1e11 s is the year 5138: anything below is seconds
  return Math.abs(value) < 1e11 ? value * 1000 : value;
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `YYYY-MM-DD HH:MM:SS` in local time, or an em dash. */
export function formatTime(time: Time | undefined): string {
  const ms = toMillis(time);
  if (ms === null) {
    return '\u2014';
  }
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** `HH:MM:SS` for a time on the same local day as `now`, else `YYYY-MM-DD HH:MM`. */
export function formatShortTime(time: Time | undefined, now: Date = new Date()): string {
  const ms = toMillis(time);
  if (ms === null) {
    return '\u2014';
  }
  const d = new Date(ms);
  const sameDay =
    d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  const full = formatTime(ms);
  return sameDay ? full.slice(11) : full.slice(0, 16);
}

/** A duration in milliseconds: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 1 min`. */
export function formatMs(ms: number | null): string | null {
  if (ms === null || !Number.isFinite(ms)) {
    return null;
  }
  const seconds = Math.max(0, ms / 1000);
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const whole = Math.round(seconds);
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  }
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** `0.4 s`, `12 s`, `3 min 5 s`, `2 h 1 min`; null while the run has no end. */
export function formatDuration(
  start: Time | undefined,
  end: Time | undefined
): string | null {
  const a = toMillis(start);
  const b = toMillis(end);
  if (a === null || b === null) {
    return null;
  }
  return formatMs(b - a);
}

/** A param or metric as text: numbers to 4 significant digits, nothing as an em dash. */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '\u2014';
  }
  if (typeof value === 'number') {
    if (Number.isNaN(value)) {
      return 'NaN';
    }
    if (!Number.isFinite(value)) {
      return value > 0 ? 'inf' : '-inf';
    }
    if (Number.isInteger(value) && Math.abs(value) < 1e15) {
      return String(value);
    }
    const magnitude = Math.abs(value);
    if (magnitude >= 1e6 || magnitude < 1e-3) {
      return value.toExponential(3);
    }
    return String(Number(value.toPrecision(4)));
  }
  if (typeof value === 'string') {
    return value;
  }
  if (typeof value === 'boolean') {
    return value ? 'true' : 'false';
  }
  return JSON.stringify(value);
}

/**
 * A link target that is safe to put in an `href`: http(s) URLs only, else null. An origin-relative address
 * (`/user/me/mlflow/#/...`: the MLflow UI that Jupyter serves) is made absolute on `base`, this page's address.
 */
export function safeHref(
  url: string | null | undefined,
  base: string | undefined = globalThis.location?.href
): string | null {
  if (!url) {
    return null;
  }
  try {
    const parsed = /^\/(?!\/)/.test(url) && base ? new URL(url, base) : new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:'
      ? parsed.href
      : null;
  } catch {
    return null;
  }
}

/** A tracking URI, short: `sqlite:///home/me/.nbmlops/mlflow.db` -> `sqlite: mlflow.db`; servers by host. */
export function shortStoreName(uri: string): string {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(uri);
  if (!scheme) {
    return uri.split('/').filter(Boolean).pop() || uri;
  }
  if (/^https?$/i.test(scheme[1])) {
    try {
      return new URL(uri).host;
    } catch {
      return uri;
    }
  }
  const rest = uri.slice(scheme[0].length).replace(/^\/+/, '');
  return `${scheme[1]}: ${rest.split('/').filter(Boolean).pop() || rest}`;
}

/**
 * What the status bar says about the tracking store: its short name, a tooltip with the details,
 * and whether all is well (`failure`: why the server extension itself could not be asked).
 */
export function storeStatusText(
  status: IStoreStatus | null,
  failure: string | null
): { text: string; title: string; ok: boolean } {
  if (failure) {
    return { text: 'MLflow: nbmlops server unavailable', title: failure, ok: false };
  }
  if (!status) {
    return { text: 'MLflow: \u2026', title: 'Checking the tracking store', ok: true };
  }
  const ok = status.reachable;
  const lines = [`Tracking store: ${status.tracking_uri}`];
  lines.push(
    ok
      ? `Experiments: ${status.experiment_count ?? '?'}`
      : `Unreachable: ${status.error ?? 'unknown error'}`
  );
  if (status.ui_url) {
    lines.push(`MLflow UI: ${status.ui_url}`);
  }
  lines.push('Click to check again.');
  return {
    text: `MLflow: ${shortStoreName(status.tracking_uri)}${ok ? '' : ' (unreachable)'}`,
    title: lines.join('\n'),
    ok
  };
}

export type StatusKind = 'finished' | 'failed' | 'running' | 'killed' | 'unknown';

/** The family of an MLflow run status or a job status, for styling. */
export function statusKind(status: string | null | undefined): StatusKind {
  switch ((status ?? '').toUpperCase()) {
    case 'FINISHED':
      return 'finished';
    case 'FAILED':
    case 'TIMEOUT':
      return 'failed';
    case 'RUNNING':
    case 'SCHEDULED':
    case 'QUEUED':
      return 'running';
    case 'KILLED':
    case 'CANCELLED':
      return 'killed';
    default:
      return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------
// Runs grouped by cell

/** The runs of one cell (or the notebook's headless runs), newest first. */
export interface ICellGroup {
  /** the cell id (or the run's cell key when the cell had no id); `#notebook` for headless runs */
  key: string;
  kind: 'cell' | 'notebook';
  runs: IRunSummary[];
  /** the status of the newest run */
  lastStatus: string;
}

export const NOTEBOOK_GROUP = '#notebook';

/** Newest first by start time; runs without a start time last, in their given order. */
export function newestFirst(runs: readonly IRunSummary[]): IRunSummary[] {
  return runs
    .map((run, index) => ({ run, index, at: toMillis(run.start_time) }))
    .sort((x, y) => {
      if (x.at === y.at) {
        return x.index - y.index;
      }
      if (x.at === null) {
        return 1;
      }
      if (y.at === null) {
        return -1;
      }
      return y.at - x.at;
    })
    .map(item => item.run);
}

/** The group a run belongs to: its cell id, else its cell key; headless notebook runs together. */
export function groupKey(run: IRunSummary): string {
  const key = run.cell_id || run.cell_key;
  if (key) {
    return key;
  }
  return NOTEBOOK_GROUP;
}

/** Runs grouped by cell; groups ordered by their newest run, runs in a group newest first. */
export function groupRunsByCell(runs: readonly IRunSummary[]): ICellGroup[] {
  const groups = new Map<string, ICellGroup>();
  for (const run of newestFirst(runs)) {
    const key = groupKey(run);
    let group = groups.get(key);
    if (!group) {
      group = {
        key,
        kind: key === NOTEBOOK_GROUP ? 'notebook' : 'cell',
        runs: [],
        lastStatus: run.status
      };
      groups.set(key, group);
    }
    group.runs.push(run);
  }
  return Array.from(groups.values());
}

/** Cell id (or key) -> the status of that cell's newest run. */
export function lastStatusByCell(
  runs: readonly IRunSummary[]
): Map<string, string> {
  const statuses = new Map<string, string>();
  for (const group of groupRunsByCell(runs)) {
    if (group.kind === 'cell') {
      statuses.set(group.key, group.lastStatus);
    }
  }
  return statuses;
}

/**
 * A heading for a group: `Cell 3` (its position in the open notebook, from `cellIndex`),
 * `Headless runs`, `Cell <id> (not in notebook)` for a cell since deleted, or `Cell <key>` for runs
 * recorded without a cell id (headless runs' cells, consoles): their `--name` or source digest.
 */
export function groupLabel(
  group: ICellGroup,
  cellIndex: ReadonlyMap<string, number> = new Map()
): string {
  if (group.kind === 'notebook') {
    return 'Headless runs';
  }
  const index = cellIndex.get(group.key);
  if (index !== undefined) {
    return `Cell ${index + 1}`;
  }
  const short = group.key.length > 12 ? `${group.key.slice(0, 8)}\u2026` : group.key;
  const hasCellId = group.runs.some(run => run.cell_id === group.key);
  return hasCellId ? `Cell ${short} (not in notebook)` : `Cell ${short}`;
}

/** Words of metric names that say how good a model is (what a person looks for first). */
const QUALITY_WORDS = new Set([
  'accuracy', 'acc', 'f1', 'auc', 'roc', 'rocauc', 'pr', 'ap', 'map', 'precision', 'recall', 'r2', 'score',
  'mse', 'rmse', 'mae', 'mape', 'loss', 'error', 'logloss', 'nll', 'perplexity', 'iou', 'dice', 'bleu', 'rouge',
  'ndcg', 'mrr', 'kappa', 'mcc', 'balanced'
]);
/** Words of metric names that describe the run rather than the model (shown last). */
const BOOKKEEPING_WORDS = new Set([
  'time', 'times', 'seconds', 'duration', 'epoch', 'epochs', 'step', 'steps', 'lr', 'learning', 'rate', 'count',
  'n', 'size', 'memory', 'mem', 'samples', 'iter', 'iterations', 'batch'
]);
const HELD_OUT = new Set(['val', 'valid', 'validation', 'test', 'eval', 'holdout', 'dev', 'cv']);

function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

/**
 * How early a metric is shown: quality metrics (accuracy, f1, loss, rmse, ...) first, those on held-out data
 * (`val_`, `test_`) before those on training data, run bookkeeping (`fit_time`, `epoch`, `lr`) last.
 */
export function metricRank(name: string): number {
  const found = words(name);
  if (found.some(word => BOOKKEEPING_WORDS.has(word)) && !found.some(word => QUALITY_WORDS.has(word))) {
    return 4;
  }
  const quality = found.some(word => QUALITY_WORDS.has(word) || /(loss|error|score)$/.test(word));
  if (!quality) {
    return 3;
  }
  if (found.some(word => HELD_OUT.has(word))) {
    return 0;
  }
  return found.includes('train') || found.includes('training') ? 2 : 1;
}

/** Metric names in the order a person reads them: see `metricRank`, then by name. */
export function orderMetrics(names: readonly string[]): string[] {
  return [...names].sort((a, b) => metricRank(a) - metricRank(b) || a.localeCompare(b));
}

/** The `limit` metrics to show first (`orderMetrics`), skipping empty ones. */
export function keyMetrics(
  metrics: Record<string, number | null>,
  limit = 3
): Array<[string, number]> {
  return orderMetrics(Object.keys(metrics).filter(name => metrics[name] !== null && metrics[name] !== undefined))
    .slice(0, limit)
    .map(name => [name, metrics[name] as number]);
}

/**
 * A param the user set (a plain name the cell assigned, or passed to `nbmlops.track`), not one read from an
 * estimator (`model.C`, `clf.logisticregression__class_weight`) or a search (`grid.best_params.C`).
 */
export function isUserParam(key: string): boolean {
  return !key.includes('.') && !key.includes('__');
}

/** The short name of an estimator's param: `clf.logisticregression__class_weight` -> `class_weight`. */
export function shortParamName(key: string): string {
  const last = key.split('.').pop() || key;
  return last.split('__').pop() || last;
}

/** Param names, the user's own first, each group by name. */
export function orderParams(names: readonly string[]): string[] {
  const own = names.filter(isUserParam).sort();
  return [...own, ...names.filter(name => !isUserParam(name)).sort()];
}

/**
 * The params a run's chips show: the user's own (at most `limit`, by name); only when it has none, its
 * estimators' params under their short names. `[label, full name]` pairs.
 */
export function keyParams(params: Record<string, Scalar>, limit = 3): Array<[string, string]> {
  const names = Object.keys(params);
  const own = names.filter(isUserParam).sort();
  if (own.length > 0) {
    return own.slice(0, limit).map(name => [name, name]);
  }
  return names
    .sort()
    .slice(0, limit)
    .map(name => [shortParamName(name), name]);
}

// ---------------------------------------------------------------------------------------------
// Comparing two runs

export interface IDiffRow {
  key: string;
  a: Scalar | undefined;
  b: Scalar | undefined;
  /** false when both runs have the same value */
  changed: boolean;
  /** b - a for two numbers, else null */
  delta: number | null;
}

export interface IRunComparison {
  params: IDiffRow[];
  metrics: IDiffRow[];
}

type Comparable = Pick<IRunSummary, 'params' | 'metrics'>;

function sameValue(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') {
    return Object.is(a, b) || a === b;
  }
  if (a === undefined || b === undefined) {
    return a === b;
  }
  // MLflow params are text: "1" from one run and 1 from another are the same param
  return String(a) === String(b);
}

function diff(
  a: Record<string, Scalar>,
  b: Record<string, Scalar>
): IDiffRow[] {
  const keys = Array.from(
    new Set([...Object.keys(a), ...Object.keys(b)])
  ).sort();
  return keys.map(key => {
    const va = key in a ? a[key] : undefined;
    const vb = key in b ? b[key] : undefined;
    const delta =
      typeof va === 'number' && typeof vb === 'number' ? vb - va : null;
    return { key, a: va, b: vb, changed: !sameValue(va, vb), delta };
  });
}

/**
 * Every metric and param of two runs side by side (a = the first selected): metrics in reading order
 * (`orderMetrics`), params with the user's own first (`orderParams`).
 */
export function compareRuns(a: Comparable, b: Comparable): IRunComparison {
  const order = (rows: IDiffRow[], sorted: string[]) => sorted.map(key => rows.find(row => row.key === key)!);
  const metrics = diff(a.metrics, b.metrics);
  const params = diff(a.params, b.params);
  return {
    params: order(params, orderParams(params.map(row => row.key))),
    metrics: order(metrics, orderMetrics(metrics.map(row => row.key)))
  };
}

/** A difference between two values, short enough for a narrow column: `+0.045`, `-1.2e+3`; '' for none. */
export function formatDelta(delta: number | null): string {
  if (delta === null || delta === 0 || Number.isNaN(delta)) {
    return '';
  }
  const magnitude = Math.abs(delta);
  const text =
    magnitude >= 1e5 || magnitude < 1e-3 ? delta.toExponential(1) : String(Number(delta.toPrecision(2)));
  return delta > 0 ? `+${text}` : text;
}

/** The rows to show: all, or only those that differ; `hidden` counts the rows left out. */
export function visibleRows(rows: readonly IDiffRow[], onlyDifferences: boolean): { rows: IDiffRow[]; hidden: number } {
  const shown = onlyDifferences ? rows.filter(row => row.changed) : [...rows];
  return { rows: shown, hidden: rows.length - shown.length };
}

/** A run as a column heading: its name (or short id), start time and short id; `title` says it all. */
export function runHeading(run: Pick<IRunSummary, 'run_id' | 'name' | 'start_time'>): {
  name: string;
  time: string;
  id: string;
  title: string;
} {
  const id = run.run_id.slice(0, 8);
  const name = run.name || id;
  const time = formatShortTime(run.start_time);
  return { name, time, id, title: `${name}\n${formatTime(run.start_time)}\nrun ${run.run_id}` };
}

/**
 * The selection after clicking a run's compare box: at most two runs, the oldest pick dropped
 * when a third is added.
 */
export function toggleCompareSelection(
  selected: readonly string[],
  runId: string
): string[] {
  if (selected.includes(runId)) {
    return selected.filter(id => id !== runId);
  }
  return [...selected, runId].slice(-2);
}

// ---------------------------------------------------------------------------------------------
// Metric series as curves

export type SeriesPoint = [number, number | null];

/** Metrics whose series are drawn together: `train_mse` and `val_mse` share the chart `mse`. */
export interface ISeriesGroup {
  title: string;
  lines: Array<{ name: string; points: SeriesPoint[] }>;
}

const SPLIT_PREFIX = /^(train|training|val|valid|validation|test|eval|holdout|dev)[_./-]/i;
const SPLIT_SUFFIX = /[_./-](train|training|val|valid|validation|test|eval|holdout|dev)$/i;

/** The name of the chart a metric's series goes in: the metric's name without its data split. */
export function seriesChartName(metric: string): string {
  const stripped = metric.replace(SPLIT_PREFIX, '').replace(SPLIT_SUFFIX, '');
  return stripped || metric;
}

/** A run's series grouped into charts (at most 4 lines each), in the order metrics are read (`orderMetrics`). */
export function seriesGroups(series: Record<string, SeriesPoint[]> | null | undefined): ISeriesGroup[] {
  const groups = new Map<string, ISeriesGroup>();
  for (const name of orderMetrics(Object.keys(series ?? {}))) {
    const points = series![name];
    if (!points || points.length < 2) {
      continue;
    }
    const title = seriesChartName(name);
    let group = groups.get(title);
    if (!group || group.lines.length >= 4) {
      group = { title: group ? name : title, lines: [] };
      groups.set(group.title, group);
    }
    group.lines.push({ name, points });
  }
  return Array.from(groups.values());
}

/** An SVG drawing of lines: a `points` attribute per line in a `width` x `height` box, and the value range. */
export function curveGeometry(
  lines: ReadonlyArray<{ points: SeriesPoint[] }>,
  width: number,
  height: number,
  pad = 3
): { paths: string[]; min: number; max: number; first: number; last: number } | null {
  const all = lines.flatMap(line => line.points).filter(([step, value]) => Number.isFinite(step) && value !== null && Number.isFinite(value));
  if (all.length < 2) {
    return null;
  }
  const steps = all.map(([step]) => step);
  const values = all.map(([, value]) => value as number);
  const first = Math.min(...steps);
  const last = Math.max(...steps);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const x = (step: number) => pad + ((step - first) / (last - first || 1)) * (width - 2 * pad);
  const y = (value: number) =>
    max === min ? height / 2 : height - pad - ((value - min) / (max - min)) * (height - 2 * pad);
  const paths = lines.map(line =>
    line.points
      .filter(([step, value]) => Number.isFinite(step) && value !== null && Number.isFinite(value))
      .map(([step, value]) => `${x(step).toFixed(1)},${y(value as number).toFixed(1)}`)
      .join(' ')
  );
  return { paths, min, max, first, last };
}

// ---------------------------------------------------------------------------------------------
// Artifacts

const IMAGE_SUFFIXES = /\.(png|jpe?g|gif|webp|svg)$/i;

/** Whether an artifact is an image the details can preview (an `<img>` never runs an SVG's script). */
export function isImageArtifact(path: string): boolean {
  return IMAGE_SUFFIXES.test(path);
}

// ---------------------------------------------------------------------------------------------
// %%track on a cell's source

const TRACK_LINE = /^%%track(?:[ \t].*)?$/;

/** Index of the first line that is not blank (IPython drops leading empty lines), or -1. */
function firstLineBounds(source: string): { start: number; end: number } | null {
  let start = 0;
  while (start <= source.length) {
    const newline = source.indexOf('\n', start);
    const end = newline === -1 ? source.length : newline;
    if (source.slice(start, end).trim() !== '') {
      return { start, end };
    }
    if (newline === -1) {
      return null;
    }
    start = newline + 1;
  }
  return null;
}

/** Whether the cell's first line is a `%%track` magic (with or without options). */
export function hasTrack(source: string): boolean {
  const bounds = firstLineBounds(source);
  return (
    bounds !== null &&
    TRACK_LINE.test(source.slice(bounds.start, bounds.end).replace(/\r$/, ''))
  );
}

/** The options on the cell's `%%track` line (`--name train`), '' if none, null if not tracked. */
export function trackOptions(source: string): string | null {
  if (!hasTrack(source)) {
    return null;
  }
  const bounds = firstLineBounds(source)!;
  return source
    .slice(bounds.start, bounds.end)
    .replace(/\r$/, '')
    .slice('%%track'.length)
    .trim();
}

/** The source with a `%%track` first line; unchanged if it has one already. */
export function addTrack(source: string, options = ''): string {
  if (hasTrack(source)) {
    return source;
  }
  const line = options.trim() ? `%%track ${options.trim()}` : '%%track';
  return `${line}\n${source}`;
}

/** The source without its `%%track` line (options included); unchanged if it has none. */
export function removeTrack(source: string): string {
  if (!hasTrack(source)) {
    return source;
  }
  const bounds = firstLineBounds(source)!;
  const after = bounds.end < source.length ? bounds.end + 1 : bounds.end;
  return source.slice(0, bounds.start) + source.slice(after);
}

/** Remove `%%track` from a tracked cell, add it to an untracked one. */
export function toggleTrack(source: string): string {
  return hasTrack(source) ? removeTrack(source) : addTrack(source);
}

// ---------------------------------------------------------------------------------------------
// Declared parameters as form fields

export type FieldType = 'int' | 'float' | 'bool' | 'str' | 'literal';

export interface IParameterField {
  name: string;
  type: FieldType;
  /** the kind of input to show */
  input: 'number' | 'checkbox' | 'text';
  /** the input's initial text: the default as a person would type it */
  initial: string;
  /** the default as written in the notebook */
  source: string;
  help: string;
}

type Literal =
  | { kind: 'int' | 'float'; value: number }
  | { kind: 'bool'; value: boolean }
  | { kind: 'str'; value: string }
  | { kind: 'none' };

const PY_ESCAPES: Record<string, string> = {
  n: '\n',
  t: '\t',
  r: '\r',
  '\\': '\\',
  "'": "'",
  '"': '"',
  '0': '\0'
};

/** A Python scalar literal (number, bool, None, plain or escaped string); null for anything else. */
export function parsePythonLiteral(text: string): Literal | null {
  const source = text.trim();
  if (source === 'True' || source === 'False') {
    return { kind: 'bool', value: source === 'True' };
  }
  if (source === 'None') {
    return { kind: 'none' };
  }
  if (/^[+-]?\d+$/.test(source.replace(/_/g, ''))) {
    return { kind: 'int', value: Number(source.replace(/_/g, '')) };
  }
  if (
    /^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$/.test(source.replace(/_/g, ''))
  ) {
    return { kind: 'float', value: Number(source.replace(/_/g, '')) };
  }
  const quoted = /^([rRuU]?)('|")(.*)\2$/s.exec(source);
  if (quoted) {
    const raw = quoted[1].toLowerCase() === 'r';
    const body = quoted[3];
    if (raw) {
      return { kind: 'str', value: body };
    }
    let value = '';
    for (let i = 0; i < body.length; i++) {
      const c = body[i];
      if (c === '\\' && i + 1 < body.length) {
        const next = body[i + 1];
        value += next in PY_ESCAPES ? PY_ESCAPES[next] : `\\${next}`;
        i++;
      } else if (c === quoted[2]) {
        return null; // an unescaped quote inside: two strings, not one
      } else {
        value += c;
      }
    }
    return { kind: 'str', value };
  }
  return null;
}

/** A declared parameter as a form field: its type (declared, else read from the default) and input. */
export function parameterField(param: IDeclaredParameter): IParameterField {
  const literal = parsePythonLiteral(param.default ?? '');
  const declared = (param.type ?? '').trim();
  let type: FieldType;
  if (declared === 'int' || declared === 'float' || declared === 'bool' || declared === 'str') {
    type = declared;
  } else if (literal && literal.kind !== 'none') {
    type = literal.kind;
  } else {
    type = 'literal';
  }
  let initial: string;
  if (type === 'bool') {
    initial = literal?.kind === 'bool' && literal.value ? 'true' : 'false';
  } else if (type === 'str' && literal?.kind === 'str') {
    initial = literal.value;
  } else {
    initial = (param.default ?? '').trim();
  }
  const input = type === 'int' || type === 'float' ? 'number' : type === 'bool' ? 'checkbox' : 'text';
  return {
    name: param.name,
    type,
    input,
    initial,
    source: param.default ?? '',
    help: param.help ?? ''
  };
}

export function parameterFields(
  params: readonly IDeclaredParameter[]
): IParameterField[] {
  return params.map(parameterField);
}

export type FieldValue =
  | { ok: true; value: unknown }
  | { ok: false; error: string };

/** The typed value of a field's text, or why it is not one. */
export function fieldValue(field: IParameterField, text: string): FieldValue {
  const raw = text.trim();
  switch (field.type) {
    case 'int':
      if (/^[+-]?\d+$/.test(raw)) {
        return { ok: true, value: Number(raw) };
      }
      return { ok: false, error: `${field.name} must be a whole number` };
    case 'float': {
      const value = Number(raw);
      if (raw !== '' && Number.isFinite(value)) {
        return { ok: true, value };
      }
      return { ok: false, error: `${field.name} must be a number` };
    }
    case 'bool':
      if (raw === 'true' || raw === 'false') {
        return { ok: true, value: raw === 'true' };
      }
      return { ok: false, error: `${field.name} must be true or false` };
    case 'str':
      return { ok: true, value: text };
    default: {
      if (raw === 'None') {
        return { ok: true, value: null };
      }
      try {
        return { ok: true, value: JSON.parse(raw) };
      } catch {
        return {
          ok: false,
          error: `${field.name} must be a JSON value (a number, "text", [list], {"key": value}, null)`
        };
      }
    }
  }
}

/**
 * The parameters to send for a headless run: only the fields whose text differs from their
 * default, so the notebook's own defaults apply to the rest exactly as written.
 */
export function changedParameters(
  fields: readonly IParameterField[],
  texts: Readonly<Record<string, string>>
): { values: Record<string, unknown>; errors: string[] } {
  const values: Record<string, unknown> = {};
  const errors: string[] = [];
  for (const field of fields) {
    const text = texts[field.name];
    if (text === undefined || text === field.initial) {
      continue;
    }
    const result = fieldValue(field, text);
    if (result.ok) {
      values[field.name] = result.value;
    } else {
      errors.push(result.error);
    }
  }
  return { values, errors };
}

// ---------------------------------------------------------------------------------------------
// Headless jobs and promotions

/** Whether the job is queued (its kernel starting) or running: it can still be cancelled. */
export function jobRunning(job: Pick<IJob, 'status'>): boolean {
  return job.status === 'queued' || job.status === 'running';
}

/** Whether the job has ended (finished, failed, timeout, killed or cancelled). */
export function jobEnded(job: Pick<IJob, 'status'>): boolean {
  return !jobRunning(job);
}

/** Progress between 0 and 1, or null when the total is not known yet. */
export function jobProgress(job: IJob): number | null {
  if (job.status === 'finished') {
    return 1;
  }
  if (!job.progress || job.progress.total <= 0) {
    return null;
  }
  return Math.min(1, Math.max(0, job.progress.done / job.progress.total));
}

/** Gate or beat expressions typed one a line (or separated by `;`): trimmed, blanks dropped. */
export function splitExpressions(text: string): string[] {
  return text
    .split(/[\n;]/)
    .map(line => line.trim())
    .filter(line => line !== '');
}
