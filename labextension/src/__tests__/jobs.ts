/** A headless job as the server extension's API answers it, for the specs to vary. */
import { IJob } from '../types';

export function job(overrides: Partial<IJob> = {}): IJob {
  return {
    job_id: 'a'.repeat(32),
    notebook: 'work/train.ipynb',
    parameters: {},
    status: 'running',
    exit_code: null,
    progress: null,
    cell: null,
    run_id: null,
    experiment: null,
    output: null,
    error: null,
    started: null,
    ended: null,
    ...overrides
  };
}
