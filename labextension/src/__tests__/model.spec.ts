import {
  addTrack,
  changedParameters,
  compareRuns,
  fieldValue,
  formatDuration,
  formatShortTime,
  formatTime,
  formatValue,
  groupLabel,
  groupRunsByCell,
  hasTrack,
  jobEnded,
  jobProgress,
  jobRunning,
  keyMetrics,
  lastStatusByCell,
  newestFirst,
  parameterField,
  parsePythonLiteral,
  removeTrack,
  safeHref,
  shortStoreName,
  storeStatusText,
  splitExpressions,
  statusKind,
  toMillis,
  toggleCompareSelection,
  toggleTrack,
  trackOptions
} from '../model';
import { IRunSummary } from '../types';
import { job } from './jobs';

function run(overrides: Partial<IRunSummary>): IRunSummary {
  return {
    run_id: 'r',
    name: null,
    status: 'FINISHED',
    experiment: 'nb.ipynb',
    start_time: null,
    end_time: null,
    cell_id: null,
    cell_key: null,
    execution_count: null,
    kind: 'cell',
    params: {},
    metrics: {},
    ...overrides
  };
}

describe('toMillis', () => {
  it('reads epoch milliseconds, epoch seconds and ISO text alike', () => {
    const ms = Date.UTC(2024, 0, 2, 3, 4, 5);
    expect(toMillis(ms)).toBe(ms);
    expect(toMillis(ms / 1000)).toBe(ms);
    expect(toMillis(String(ms))).toBe(ms);
    expect(toMillis('2024-01-02T03:04:05Z')).toBe(ms);
  });

  it('gives null for nothing or unreadable text', () => {
    expect(toMillis(null)).toBeNull();
    expect(toMillis(undefined)).toBeNull();
    expect(toMillis('')).toBeNull();
    expect(toMillis('yesterday-ish')).toBeNull();
  });
});

describe('grouping runs by cell', () => {
  const runs = [
    run({ run_id: 'a1', cell_id: 'A', start_time: 1000, status: 'FAILED' }),
    run({ run_id: 'b1', cell_id: 'B', start_time: 2000 }),
    run({ run_id: 'a2', cell_id: 'A', start_time: 3000, status: 'FINISHED' }),
    run({ run_id: 'k1', cell_key: 'train', start_time: 1500 }),
    run({ run_id: 'n1', kind: 'notebook', start_time: 500 })
  ];

  it('orders runs newest first, runs without a start time last in their order', () => {
    const ordered = newestFirst([
      run({ run_id: 'x' }),
      run({ run_id: 'old', start_time: 1 }),
      run({ run_id: 'y' }),
      run({ run_id: 'new', start_time: '2030-01-01T00:00:00Z' })
    ]);
    expect(ordered.map(r => r.run_id)).toEqual(['new', 'old', 'x', 'y']);
  });

  it('groups by cell id, falls back to the cell key, and puts headless runs together', () => {
    const groups = groupRunsByCell(runs);
    expect(groups.map(g => g.key)).toEqual(['A', 'B', 'train', '#notebook']);
    expect(groups[0].runs.map(r => r.run_id)).toEqual(['a2', 'a1']);
    expect(groups[3].kind).toBe('notebook');
    expect(groups[2].kind).toBe('cell');
  });

  it("gives each cell its newest run's status", () => {
    const statuses = lastStatusByCell(runs);
    expect(statuses.get('A')).toBe('FINISHED');
    expect(statuses.get('B')).toBe('FINISHED');
    expect(statuses.get('train')).toBe('FINISHED');
    expect(statuses.has('#notebook')).toBe(false);
  });

  it('a failed newest run makes the cell failed', () => {
    const statuses = lastStatusByCell([
      run({ cell_id: 'A', start_time: 1, status: 'FINISHED' }),
      run({ cell_id: 'A', start_time: 2, status: 'FAILED' })
    ]);
    expect(statuses.get('A')).toBe('FAILED');
  });

  it('gives no groups for no runs', () => {
    expect(groupRunsByCell([])).toEqual([]);
  });

  it('labels groups by their position in the notebook', () => {
    const [a, , train, headless] = groupRunsByCell(runs);
    expect(groupLabel(a, new Map([['A', 2]]))).toBe('Cell 3');
    expect(groupLabel(headless)).toBe('Headless runs');
    expect(groupLabel(train)).toBe('Cell train');
    const deleted = groupRunsByCell([run({ cell_id: '0123456789abcdef', cell_key: '0123456789abcdef' })])[0];
    expect(groupLabel(deleted)).toBe('Cell 01234567\u2026 (not in notebook)');
  });

  it('picks key metrics by name, skipping empty ones', () => {
    expect(keyMetrics({ z: 1, a: 2, m: null, b: 3, c: 4 })).toEqual([
      ['a', 2],
      ['b', 3],
      ['c', 4]
    ]);
    expect(keyMetrics({ z: 1, a: 2 }, 1)).toEqual([['a', 2]]);
  });
});

describe('comparing two runs', () => {
  it('lists every param and metric of both runs, marking what changed', () => {
    const a = { params: { C: '0.5', solver: 'lbfgs', only_a: 'x' }, metrics: { acc: 0.8, loss: 0.5 } };
    const b = { params: { C: '1.0', solver: 'lbfgs' }, metrics: { acc: 0.9, f1: 0.7, loss: 0.5 } };
    const { params, metrics } = compareRuns(a, b);
    expect(params.map(r => [r.key, r.changed])).toEqual([
      ['C', true],
      ['only_a', true],
      ['solver', false]
    ]);
    expect(params[1].b).toBeUndefined();
    expect(metrics.map(r => r.key)).toEqual(['acc', 'f1', 'loss']);
    expect(metrics[0].delta).toBeCloseTo(0.1);
    expect(metrics[1]).toMatchObject({ a: undefined, b: 0.7, changed: true, delta: null });
    expect(metrics[2]).toMatchObject({ changed: false, delta: 0 });
  });

  it('treats a param logged as text and as a number as the same value', () => {
    const { params } = compareRuns({ params: { n: '3' }, metrics: {} }, { params: { n: 3 }, metrics: {} });
    expect(params[0].changed).toBe(false);
  });

  it('treats two NaN metrics as unchanged', () => {
    const { metrics } = compareRuns({ params: {}, metrics: { m: NaN } }, { params: {}, metrics: { m: NaN } });
    expect(metrics[0].changed).toBe(false);
  });

  it('keeps at most two runs selected, dropping the oldest pick', () => {
    let selected = toggleCompareSelection([], 'a');
    selected = toggleCompareSelection(selected, 'b');
    expect(selected).toEqual(['a', 'b']);
    expect(toggleCompareSelection(selected, 'c')).toEqual(['b', 'c']);
    expect(toggleCompareSelection(selected, 'a')).toEqual(['b']);
  });
});

describe('%%track on a cell', () => {
  it('adds %%track as the first line', () => {
    expect(addTrack('x = 1\ny = 2')).toBe('%%track\nx = 1\ny = 2');
    expect(addTrack('')).toBe('%%track\n');
    expect(addTrack('x = 1', '--name train')).toBe('%%track --name train\nx = 1');
  });

  it('adding is idempotent', () => {
    const once = addTrack('x = 1');
    expect(addTrack(once)).toBe(once);
    expect(addTrack('%%track -n fit\nx = 1')).toBe('%%track -n fit\nx = 1');
  });

  it('keeps other magics below %%track', () => {
    expect(addTrack('%%time\nx = 1')).toBe('%%track\n%%time\nx = 1');
    expect(removeTrack('%%track\n%%time\nx = 1')).toBe('%%time\nx = 1');
    expect(addTrack('%matplotlib inline\nx = 1')).toBe('%%track\n%matplotlib inline\nx = 1');
  });

  it('removes the %%track line with its options', () => {
    expect(removeTrack('%%track --name train --tag a=b\nx = 1')).toBe('x = 1');
    expect(removeTrack('%%track')).toBe('');
    expect(removeTrack('%%track\r\nx = 1')).toBe('x = 1');
  });

  it('removing is idempotent and leaves untracked cells alone', () => {
    expect(removeTrack('x = 1')).toBe('x = 1');
    expect(removeTrack(removeTrack('%%track\nx = 1'))).toBe('x = 1');
  });

  it('finds %%track after leading blank lines, as IPython does', () => {
    expect(hasTrack('\n  \n%%track\nx = 1')).toBe(true);
    expect(removeTrack('\n%%track\nx = 1')).toBe('\nx = 1');
  });

  it('does not mistake other magics or later lines for %%track', () => {
    expect(hasTrack('%%tracking\nx')).toBe(false);
    expect(hasTrack('%track\nx')).toBe(false);
    expect(hasTrack('x = 1\n%%track')).toBe(false);
    expect(hasTrack('# %%track\nx')).toBe(false);
    expect(hasTrack('')).toBe(false);
  });

  it('toggles back to the exact source', () => {
    const source = 'import numpy as np\n\nx = np.ones(3)\n';
    expect(toggleTrack(toggleTrack(source))).toBe(source);
    expect(toggleTrack('%%track -n a\nx')).toBe('x');
  });

  it('reads the options of the %%track line', () => {
    expect(trackOptions('%%track --name train\nx')).toBe('--name train');
    expect(trackOptions('%%track\nx')).toBe('');
    expect(trackOptions('x')).toBeNull();
  });
});

describe('declared parameters as form fields', () => {
  it('reads Python literals', () => {
    expect(parsePythonLiteral('3')).toEqual({ kind: 'int', value: 3 });
    expect(parsePythonLiteral('-1_000')).toEqual({ kind: 'int', value: -1000 });
    expect(parsePythonLiteral('0.5')).toEqual({ kind: 'float', value: 0.5 });
    expect(parsePythonLiteral('1e-3')).toEqual({ kind: 'float', value: 0.001 });
    expect(parsePythonLiteral('True')).toEqual({ kind: 'bool', value: true });
    expect(parsePythonLiteral('None')).toEqual({ kind: 'none' });
    expect(parsePythonLiteral("'data.csv'")).toEqual({ kind: 'str', value: 'data.csv' });
    expect(parsePythonLiteral('"it\'s"')).toEqual({ kind: 'str', value: "it's" });
    expect(parsePythonLiteral("'a\\nb'")).toEqual({ kind: 'str', value: 'a\nb' });
    expect(parsePythonLiteral("r'C:\\data'")).toEqual({ kind: 'str', value: 'C:\\data' });
    expect(parsePythonLiteral("'a' + 'b'")).toBeNull();
    expect(parsePythonLiteral('[1, 2]')).toBeNull();
    expect(parsePythonLiteral('np.pi')).toBeNull();
  });

  it('types fields from the declared type, else from the default', () => {
    expect(parameterField({ name: 'C', type: 'float', default: '0.5', help: 'regularisation' })).toEqual({
      name: 'C',
      type: 'float',
      input: 'number',
      initial: '0.5',
      source: '0.5',
      help: 'regularisation'
    });
    expect(parameterField({ name: 'n', type: '', default: '10', help: '' })).toMatchObject({
      type: 'int',
      input: 'number'
    });
    expect(parameterField({ name: 'path', type: 'str', default: "'data/train.csv'", help: '' })).toMatchObject({
      type: 'str',
      input: 'text',
      initial: 'data/train.csv'
    });
    expect(parameterField({ name: 'fast', type: 'bool', default: 'True', help: '' })).toMatchObject({
      type: 'bool',
      input: 'checkbox',
      initial: 'true'
    });
    expect(parameterField({ name: 'layers', type: 'list', default: '[64, 32]', help: '' })).toMatchObject({
      type: 'literal',
      input: 'text',
      initial: '[64, 32]'
    });
    expect(parameterField({ name: 'x', type: null, default: '2.5', help: '' })).toMatchObject({ type: 'float' });
    expect(parameterField({ name: 'seed', type: 'None', default: 'None', help: '' })).toMatchObject({
      type: 'literal',
      initial: 'None'
    });
  });

  it('turns field text into typed values, or says why not', () => {
    const int = parameterField({ name: 'n', type: 'int', default: '1', help: '' });
    const float = parameterField({ name: 'C', type: 'float', default: '1.0', help: '' });
    const bool = parameterField({ name: 'b', type: 'bool', default: 'False', help: '' });
    const str = parameterField({ name: 's', type: 'str', default: "'x'", help: '' });
    const literal = parameterField({ name: 'l', type: 'list', default: '[1]', help: '' });
    expect(fieldValue(int, ' 42 ')).toEqual({ ok: true, value: 42 });
    expect(fieldValue(int, '4.2')).toEqual({ ok: false, error: 'n must be a whole number' });
    expect(fieldValue(float, '2.5')).toEqual({ ok: true, value: 2.5 });
    expect(fieldValue(float, '')).toMatchObject({ ok: false });
    expect(fieldValue(float, 'abc')).toMatchObject({ ok: false });
    expect(fieldValue(bool, 'true')).toEqual({ ok: true, value: true });
    expect(fieldValue(str, ' spaced ')).toEqual({ ok: true, value: ' spaced ' });
    expect(fieldValue(literal, '[1, 2]')).toEqual({ ok: true, value: [1, 2] });
    expect(fieldValue(literal, 'None')).toEqual({ ok: true, value: null });
    expect(fieldValue(literal, "['a']")).toMatchObject({ ok: false });
  });

  it('sends only the parameters that were changed', () => {
    const fields = [
      parameterField({ name: 'C', type: 'float', default: '0.5', help: '' }),
      parameterField({ name: 'n', type: 'int', default: '10', help: '' }),
      parameterField({ name: 'path', type: 'str', default: "'a.csv'", help: '' })
    ];
    expect(changedParameters(fields, { C: '0.5', n: '20', path: 'a.csv' })).toEqual({
      values: { n: 20 },
      errors: []
    });
    expect(changedParameters(fields, { C: 'x', n: '10' })).toEqual({
      values: {},
      errors: ['C must be a number']
    });
  });
});

describe('formatting', () => {
  it('formats values for a table', () => {
    expect(formatValue(null)).toBe('\u2014');
    expect(formatValue(undefined)).toBe('\u2014');
    expect(formatValue(3)).toBe('3');
    expect(formatValue(0.912345)).toBe('0.9123');
    expect(formatValue(0.5)).toBe('0.5');
    expect(formatValue(123456.789)).toBe('123500');
    expect(formatValue(12345678.9)).toBe('1.235e+7');
    expect(formatValue(0.00001234)).toBe('1.234e-5');
    expect(formatValue(NaN)).toBe('NaN');
    expect(formatValue(-Infinity)).toBe('-inf');
    expect(formatValue(true)).toBe('true');
    expect(formatValue('lbfgs')).toBe('lbfgs');
    expect(formatValue([1, 2])).toBe('[1,2]');
  });

  it('formats times in local time and durations', () => {
    const local = new Date(2024, 4, 6, 7, 8, 9).getTime();
    expect(formatTime(local)).toBe('2024-05-06 07:08:09');
    expect(formatTime(null)).toBe('\u2014');
    expect(formatShortTime(local, new Date(2024, 4, 6, 23, 0, 0))).toBe('07:08:09');
    expect(formatShortTime(local, new Date(2024, 4, 7, 1, 0, 0))).toBe('2024-05-06 07:08');
    expect(formatShortTime(undefined)).toBe('\u2014');
    const t0 = Date.UTC(2024, 0, 1);
    expect(formatDuration(t0, t0 + 400)).toBe('0.4 s');
    expect(formatDuration(t0, t0 + 12_400)).toBe('12 s');
    expect(formatDuration(t0, t0 + 185_000)).toBe('3 min 5 s');
    expect(formatDuration(t0, t0 + 3_720_000)).toBe('1 h 2 min');
    expect(formatDuration(t0 / 1000, (t0 + 2000) / 1000)).toBe('2.0 s');
    expect(formatDuration(t0, null)).toBeNull();
  });

  it('links only to http(s) addresses', () => {
    expect(safeHref('http://127.0.0.1:5000/#/experiments/1/runs/abc')).toBe(
      'http://127.0.0.1:5000/#/experiments/1/runs/abc'
    );
    expect(safeHref('https://mlflow.example.org')).toBe('https://mlflow.example.org/');
    expect(safeHref('javascript:alert(1)')).toBeNull();
    expect(safeHref('data:text/html,<b>x</b>')).toBeNull();
    expect(safeHref('not a url')).toBeNull();
    expect(safeHref(null)).toBeNull();
  });

  it('links to the MLflow UI that Jupyter serves, on the page\'s own server', () => {
    const lab = 'https://hub.example.org/user/alice/lab/tree/train.ipynb';
    expect(safeHref('/user/alice/mlflow/#/experiments/1/runs/abc', lab)).toBe(
      'https://hub.example.org/user/alice/mlflow/#/experiments/1/runs/abc'
    );
    expect(safeHref('//evil.example/x', lab)).toBeNull();
    expect(safeHref('/user/alice/mlflow/', undefined)).toBeNull();
  });

  it('names a tracking store briefly', () => {
    expect(shortStoreName('sqlite:////tmp/p/.nbmlops/mlflow.db')).toBe('sqlite: mlflow.db');
    expect(shortStoreName('http://mlflow.internal:5000')).toBe('mlflow.internal:5000');
    expect(shortStoreName('https://user@mlflow.example.org/')).toBe('mlflow.example.org');
    expect(shortStoreName('file:///home/me/mlruns')).toBe('file: mlruns');
    expect(shortStoreName('databricks')).toBe('databricks');
    expect(shortStoreName('/home/me/mlruns')).toBe('mlruns');
  });

  it('tells in the status bar which store is used, and when it cannot be reached', () => {
    const status = {
      tracking_uri: 'sqlite:////p/.nbmlops/mlflow.db',
      reachable: true,
      error: null,
      ui_url: 'http://127.0.0.1:5000',
      experiment_count: 3
    };
    expect(storeStatusText(status, null)).toEqual({
      text: 'MLflow: sqlite: mlflow.db',
      title:
        'Tracking store: sqlite:////p/.nbmlops/mlflow.db\nExperiments: 3\nMLflow UI: http://127.0.0.1:5000\nClick to check again.',
      ok: true
    });
    const down = storeStatusText(
      { ...status, tracking_uri: 'http://mlflow:5000', reachable: false, error: 'ConnectionError: refused', ui_url: null },
      null
    );
    expect(down).toMatchObject({ text: 'MLflow: mlflow:5000 (unreachable)', ok: false });
    expect(down.title).toContain('Unreachable: ConnectionError: refused');
    expect(storeStatusText(null, 'Not Found')).toEqual({
      text: 'MLflow: nbmlops server unavailable',
      title: 'Not Found',
      ok: false
    });
    expect(storeStatusText(null, null).ok).toBe(true);
  });

  it('sorts statuses into families', () => {
    expect(statusKind('FINISHED')).toBe('finished');
    expect(statusKind('finished')).toBe('finished');
    expect(statusKind('FAILED')).toBe('failed');
    expect(statusKind('TIMEOUT')).toBe('failed');
    expect(statusKind('RUNNING')).toBe('running');
    expect(statusKind('KILLED')).toBe('killed');
    expect(statusKind('cancelled')).toBe('killed');
    expect(statusKind(undefined)).toBe('unknown');
  });
});

describe('headless jobs and promotions', () => {
  it('counts a queued job as running, every other status as ended', () => {
    expect(jobRunning(job({ status: 'queued' }))).toBe(true);
    expect(jobRunning(job({ status: 'running' }))).toBe(true);
    for (const status of ['finished', 'failed', 'timeout', 'killed', 'cancelled'] as const) {
      expect(jobRunning(job({ status }))).toBe(false);
      expect(jobEnded(job({ status }))).toBe(true);
    }
    expect(jobEnded(job({ status: 'queued' }))).toBe(false);
    expect(statusKind('queued')).toBe('running');
    expect(statusKind('timeout')).toBe('failed');
    expect(statusKind('killed')).toBe('killed');
  });

  it('gives progress as a fraction when the total is known', () => {
    expect(jobProgress(job({}))).toBeNull();
    expect(jobProgress(job({ progress: { done: 1, total: 4 } }))).toBe(0.25);
    expect(jobProgress(job({ progress: { done: 0, total: 0 } }))).toBeNull();
    expect(jobProgress(job({ status: 'finished' }))).toBe(1);
  });

  it('splits gate expressions by line or semicolon', () => {
    expect(splitExpressions('accuracy >= 0.9\n\n  rmse < 1 ; mae < 2 ')).toEqual([
      'accuracy >= 0.9',
      'rmse < 1',
      'mae < 2'
    ]);
    expect(splitExpressions('  ')).toEqual([]);
  });
});
