/**
 * The headless runs (jobs) of the active notebook as the Experiments panel lists them: progress, cancel, the
 * executed notebook.
 */

import { showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { formatTime, formatValue, jobProgress, jobRunning, jobSummary, statusKind } from './model';
import { IJob } from './types';

/** The jobs section of the Runs tab; nothing when the notebook has no headless runs. */
export function JobsSection(props: { jobs: IJob[]; commands: CommandRegistry }): JSX.Element | null {
  if (props.jobs.length === 0) {
    return null;
  }
  return (
    <section className="nbmlops-lab-jobs">
      <h3>Jobs</h3>
      {props.jobs.map(job => (
        <JobItem key={job.job_id} job={job} commands={props.commands} />
      ))}
    </section>
  );
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}

/** The lab URL of a file, for a link that also works when opened in a new tab. */
function labUrl(path: string): string {
  return URLExt.join(PageConfig.getBaseUrl(), 'lab', 'tree', ...path.split('/').map(encodeURIComponent));
}

function JobItem(props: { job: IJob; commands: CommandRegistry }): JSX.Element {
  const { job, commands } = props;
  const progress = jobProgress(job);
  const open = (event: React.MouseEvent) => {
    event.preventDefault();
    commands.execute('docmanager:open', { path: job.output }).catch(error =>
      showErrorMessage('Open executed notebook', `${job.output}: ${(error as Error).message || error}`)
    );
  };
  return (
    <div className="nbmlops-lab-job" data-job-id={job.job_id} data-status={job.status}>
      <div className="nbmlops-lab-job-header">
        <span className={`nbmlops-lab-dot nbmlops-lab-status-${statusKind(job.status)}`} />
        <span className="nbmlops-lab-job-summary">{jobSummary(job)}</span>
        {jobRunning(job) && (
          <button
            className="nbmlops-lab-link-button"
            onClick={() => void commands.execute('nbmlops:cancel-job', { jobId: job.job_id })}
          >
            Cancel
          </button>
        )}
      </div>
      {jobRunning(job) && (
        <progress className="nbmlops-lab-progress" max={1} value={progress ?? undefined} />
      )}
      <div className="nbmlops-lab-job-meta">
        {formatTime(job.started)}
        {Object.keys(job.parameters).length > 0 &&
          ' \u00b7 ' +
            Object.entries(job.parameters)
              .map(([key, value]) => `${key}=${formatValue(value)}`)
              .join(', ')}
      </div>
      {job.output && job.status !== 'running' && (
        <a className="nbmlops-lab-job-output" href={labUrl(job.output)} onClick={open} title={job.output}>
          Open executed notebook ({basename(job.output)})
        </a>
      )}
    </div>
  );
}
