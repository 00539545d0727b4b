/** The Experiments panel's choices (src/model.ts): which chips, the comparison's order and rows, curves. */

import {
  compareRuns,
  curveGeometry,
  formatDelta,
  isImageArtifact,
  keyMetrics,
  keyParams,
  metricRank,
  orderMetrics,
  orderParams,
  runHeading,
  seriesChartName,
  seriesGroups,
  storeStatusText,
  visibleRows
} from '../model';

describe('chips', () => {
  it('show quality metrics first, held-out before training, bookkeeping last', () => {
    const metrics = { fit_time: 0.3, accuracy: 0.91, epoch: 29, train_mse: 0.1, val_mse: 0.2, n_features: 4 };
    expect(keyMetrics(metrics).map(([name]) => name)).toEqual(['val_mse', 'accuracy', 'train_mse']);
    expect(metricRank('val_loss')).toBeLessThan(metricRank('train_loss'));
    expect(metricRank('fit_time')).toBeGreaterThan(metricRank('custom_thing'));
    expect(orderMetrics(['zeta', 'alpha', 'valAccuracy'])).toEqual(['valAccuracy', 'alpha', 'zeta']);
  });

  it("show the user's own params, never the alphabetically first estimator params", () => {
    const params = {
      'clf.logisticregression__class_weight': 'balanced',
      'clf.logisticregression__C': '0.05',
      C: '0.05',
      test_size: '0.2',
      'grid.best_params.C': '1'
    };
    expect(keyParams(params)).toEqual([
      ['C', 'C'],
      ['test_size', 'test_size']
    ]);
  });

  it("fall back to an estimator's params under their short names when the cell set none", () => {
    expect(keyParams({ 'clf.logisticregression__C': '0.5', 'clf.logisticregression__max_iter': '200' })).toEqual([
      ['C', 'clf.logisticregression__C'],
      ['max_iter', 'clf.logisticregression__max_iter']
    ]);
  });
});

describe('the comparison', () => {
  const a = {
    params: { 'model.alpha': '1', C: '0.5', seed: '1' },
    metrics: { fit_time: 1, accuracy: 0.8, loss: 0.5 }
  };
  const b = {
    params: { 'model.alpha': '1', C: '0.05', seed: '1' },
    metrics: { fit_time: 1.4, accuracy: 0.9, loss: 0.5 }
  };

  it('puts metrics in reading order and the user params before estimator params', () => {
    const { params, metrics } = compareRuns(a, b);
    expect(metrics.map(row => row.key)).toEqual(['accuracy', 'loss', 'fit_time']);
    expect(params.map(row => row.key)).toEqual(['C', 'seed', 'model.alpha']);
    expect(orderParams(['b.x', 'a', 'c__d'])).toEqual(['a', 'b.x', 'c__d']);
  });

  it('shows only the differences by default, counting the rows it hides', () => {
    const { params, metrics } = compareRuns(a, b);
    expect(visibleRows(metrics, true)).toEqual({ rows: [metrics[0], metrics[2]], hidden: 1 });
    expect(visibleRows(params, true).rows.map(row => row.key)).toEqual(['C']);
    expect(visibleRows(params, false)).toEqual({ rows: params, hidden: 0 });
  });

  it('writes differences briefly, never +0', () => {
    expect(formatDelta(-0.04500001)).toBe('-0.045');
    expect(formatDelta(0.033333)).toBe('+0.033');
    expect(formatDelta(1234567)).toBe('+1.2e+6');
    expect(formatDelta(0)).toBe('');
    expect(formatDelta(null)).toBe('');
  });

  it('names each column by run name, start time and short id', () => {
    const heading = runHeading({ run_id: 'abcdef0123456789', name: 'train', start_time: Date.UTC(2026, 0, 2, 3, 4, 5) });
    expect(heading.name).toBe('train');
    expect(heading.id).toBe('abcdef01');
    expect(heading.time).toMatch(/\d\d:\d\d/);
    expect(heading.title).toContain('abcdef0123456789');
    expect(runHeading({ run_id: 'abcdef0123456789', name: null, start_time: null }).name).toBe('abcdef01');
  });
});

describe('curves', () => {
  it('draw train and val splits of one metric in one chart, quality metrics first', () => {
    expect(seriesChartName('train_mse')).toBe('mse');
    expect(seriesChartName('val-mse')).toBe('mse');
    expect(seriesChartName('mse_test')).toBe('mse');
    const groups = seriesGroups({
      lr: [[0, 0.1], [1, 0.05]],
      train_mse: [[0, 1], [1, 0.5]],
      val_mse: [[0, 1.2], [1, 0.7]],
      single: [[0, 1]]
    });
    expect(groups.map(group => group.title)).toEqual(['mse', 'lr']);
    expect(groups[0].lines.map(line => line.name)).toEqual(['val_mse', 'train_mse']);
  });

  it('fit every line into the box, NaN and missing points left out', () => {
    const geometry = curveGeometry(
      [{ points: [[0, 1], [1, null], [2, 0], [3, NaN]] }, { points: [[0, 0.5], [4, 0.5]] }],
      100,
      50,
      0
    )!;
    expect(geometry.min).toBe(0);
    expect(geometry.max).toBe(1);
    expect(geometry.first).toBe(0);
    expect(geometry.last).toBe(4);
    expect(geometry.paths[0]).toBe('0.0,0.0 50.0,50.0');
    expect(geometry.paths[1]).toBe('0.0,25.0 100.0,25.0');
    expect(curveGeometry([{ points: [[0, 1]] }], 100, 50)).toBeNull();
  });
});

describe('artifacts and the store', () => {
  it('previews only images', () => {
    expect(['figures/a.png', 'b.SVG', 'c.jpeg', 'report.html', 'model.pkl'].filter(isImageArtifact)).toEqual([
      'figures/a.png',
      'b.SVG',
      'c.jpeg'
    ]);
  });

  it("says in the status bar why the store is unreachable, in the server's words", () => {
    const status = {
      tracking_uri: 'http://127.0.0.1:5000',
      reachable: false,
      error: 'tracking store http://127.0.0.1:5000 is unavailable: it refused the connection',
      ui_url: null,
      experiment_count: null
    };
    const shown = storeStatusText(status, null);
    expect(shown.ok).toBe(false);
    expect(shown.text).toBe('MLflow: 127.0.0.1:5000 (unreachable)');
    expect(shown.title).toContain('refused the connection');
  });
});
