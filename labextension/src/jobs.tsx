/**
 * The headless runs (jobs) of the active notebook as the Experiments panel lists them: while one runs, its
 * progress, the cell it is at and the time it has taken, with Cancel; once it ended, its key metrics (those its
 * gates name first), its duration, each gate's outcome, why it failed, and links to its run (in the MLflow UI,
 * and in the panel's run list) and to the executed notebook.
 */

import { showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { formatShortTime, formatTime, formatValue, jobProgress, jobRunning, safeHref, statusKind } from './model';
import {
  basename,
  formatSeconds,
  jobErrorLine,
  jobHeadline,
  keyMetricsFirst,
  shortId
} from './results';
import { IJob } from './types';

const TICK_MS = 1000;

/**
 * The jobs section of the Runs tab; nothing when the notebook has no headless runs. `onSelectRun`, when given,
 * selects a run in the panel's run list (a finished job's run).
 */
export function JobsSection(props: {
  jobs: IJob[];
  commands: CommandRegistry;
  onSelectRun?: (runId: string) => void;
}): JSX.Element | null {
  if (props.jobs.length === 0) {
    return null;
  }
  return (
    <section className="nbmlops-lab-jobs">
      <h3>Headless jobs</h3>
      {props.jobs.map(job => (
        <JobItem key={job.job_id} job={job} commands={props.commands} onSelectRun={props.onSelectRun} />
      ))}
    </section>
  );
}

/** The lab URL of a file, for a link that also works when opened in a new tab. */
function labUrl(path: string): string {
  return URLExt.join(PageConfig.getBaseUrl(), 'lab', 'tree', ...path.split('/').map(encodeURIComponent));
}

/** The current time, again every second while `live`: what a running job's elapsed time is counted to. */
function useNow(live: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!live) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now()), TICK_MS);
    return () => window.clearInterval(timer);
  }, [live]);
  return live ? Math.max(now, Date.now()) : now;
}

function JobItem(props: {
  job: IJob;
  commands: CommandRegistry;
  onSelectRun?: (runId: string) => void;
}): JSX.Element {
  const { job, commands, onSelectRun } = props;
  const running = jobRunning(job);
  const now = useNow(running);
  const progress = jobProgress(job);
  const gates = job.gates ?? [];
  const metrics = keyMetricsFirst(job.metrics, gates);
  const error = jobErrorLine(job);
  const mlflow = safeHref(job.run_url);
  const open = (event: React.MouseEvent) => {
    event.preventDefault();
    commands.execute('docmanager:open', { path: job.output }).catch(reason =>
      showErrorMessage('Open executed notebook', `${job.output}: ${(reason as Error).message || reason}`)
    );
  };
  const settings = [
    ...Object.entries(job.parameters).map(([key, value]) => `${key}=${formatValue(value)}`),
    ...(job.timeout ? [`timeout ${formatSeconds(job.timeout)}`] : [])
  ];
  return (
    <div
      className={`nbmlops-lab-job nbmlops-lab-job-${statusKind(job.status)}`}
      data-job-id={job.job_id}
      data-status={job.status}
    >
      <div className="nbmlops-lab-job-header">
        <span className={`nbmlops-lab-dot nbmlops-lab-status-${statusKind(job.status)}`} />
        <span className="nbmlops-lab-job-summary">{jobHeadline(job, now)}</span>
        <span className="nbmlops-lab-job-started" title={formatTime(job.started)}>
          {formatShortTime(job.started)}
        </span>
        {running && (
          <button
            className="nbmlops-lab-link-button"
            onClick={() => void commands.execute('nbmlops:cancel-job', { jobId: job.job_id })}
          >
            Cancel
          </button>
        )}
      </div>
      {running && (
        <progress
          className="nbmlops-lab-progress"
          max={1}
          value={progress ?? undefined}
          aria-label="cells done"
        />
      )}
      {metrics.shown.length > 0 && (
        <div className="nbmlops-lab-job-metrics">
          {metrics.shown.map(([name, value]) => (
            <span key={name} className="nbmlops-lab-job-metric" data-metric={name}>
              <span className="nbmlops-lab-job-metric-name">{name}</span>{' '}
              <span className="nbmlops-lab-job-metric-value">{formatValue(value)}</span>
            </span>
          ))}
          {metrics.more > 0 && <span className="nbmlops-lab-job-more">+{metrics.more} more</span>}
        </div>
      )}
      {(job.gate_results ?? []).length > 0 ? (
        <ul className="nbmlops-lab-job-gates">
          {(job.gate_results ?? []).map((gate, index) => (
            <li
              key={index}
              className={gate.passed ? 'nbmlops-lab-check-passed' : 'nbmlops-lab-check-failed'}
              title={gate.message}
            >
              {gate.passed ? '\u2713' : '\u2717'} <code>{gate.gate}</code>
              {!gate.passed && <span className="nbmlops-lab-job-gate-why">{gate.message.replace(/^gate "[^]*?" failed: /, ': ')}</span>}
            </li>
          ))}
        </ul>
      ) : (
        gates.length > 0 && (
          <div className="nbmlops-lab-job-meta">
            gates: <code>{gates.join('; ')}</code>
          </div>
        )
      )}
      {error && <div className="nbmlops-lab-job-error">{error}</div>}
      {settings.length > 0 && <div className="nbmlops-lab-job-meta">{settings.join(', ')}</div>}
      {!running && (job.run_id || job.output) && (
        <div className="nbmlops-lab-job-links">
          {job.run_id && onSelectRun && (
            <button
              className="nbmlops-lab-link-button nbmlops-lab-job-select-run"
              title="Show this run in the list below"
              onClick={event => {
                const panel = (event.currentTarget as HTMLElement).closest('.nbmlops-ExperimentsPanel') ?? document;
                onSelectRun(job.run_id!);
                // once the list has drawn it selected (the run list marks each run with its id)
                window.requestAnimationFrame(() =>
                  panel
                    .querySelector(`.nbmlops-lab-run[data-run-id="${job.run_id}"]`)
                    ?.scrollIntoView({ block: 'nearest' })
                );
              }}
            >
              Run {shortId(job.run_id)}
            </button>
          )}
          {job.run_id && mlflow && (
            <a className="nbmlops-lab-job-run-link" href={mlflow} target="_blank" rel="noopener noreferrer">
              {onSelectRun ? 'MLflow UI' : `Run ${shortId(job.run_id)} in the MLflow UI`}
            </a>
          )}
          {job.output && (
            <a className="nbmlops-lab-job-output" href={labUrl(job.output)} onClick={open} title={job.output}>
              Executed notebook ({basename(job.output)})
            </a>
          )}
        </div>
      )}
    </div>
  );
}
