/**
 * The server extension's routes as typed calls (see `types.ts` for the bodies).
 */

import { IDeployment, IDeploymentList } from './deploymentsModel';
import { ApiError, apiUrl, query, requestAPI } from './request';
import {
  IJob,
  IModelDetails,
  IModelSummary,
  INotebookParameters,
  IPromotionRequest,
  IPromotionResult,
  IRunDetails,
  IRunList,
  IStoreStatus
} from './types';

function path(...segments: string[]): string {
  return segments.map(encodeURIComponent).join('/');
}

function post(body: unknown): RequestInit {
  return { method: 'POST', body: JSON.stringify(body) };
}

export function getStatus(): Promise<IStoreStatus> {
  return requestAPI<IStoreStatus>('status');
}

/** The runs recorded for a notebook (its path relative to the server root), newest first. */
export function listRuns(notebook: string, limit = 200): Promise<IRunList> {
  return requestAPI<IRunList>(`runs${query({ notebook, limit })}`);
}

/** One run in full; `notebook` (the notebook it belongs to) picks the store that notebook's project uses. */
export function getRun(runId: string, notebook?: string | null): Promise<IRunDetails> {
  return requestAPI<IRunDetails>(`${path('runs', runId)}${query({ notebook })}`);
}

/**
 * The address of a run's artifact file as the server extension serves it (authenticated by Jupyter's login
 * cookie, so it works as a link and as an `<img>` source); `download` makes it an attachment.
 */
export function artifactUrl(runId: string, artifact: string, notebook?: string | null, download = false): string {
  return apiUrl(`${path('runs', runId, 'artifact')}${query({ path: artifact, notebook, download: download ? 1 : null })}`);
}

export function getParameters(notebook: string): Promise<INotebookParameters> {
  return requestAPI<INotebookParameters>(`notebook/parameters${query({ notebook })}`);
}

export async function listModels(): Promise<IModelSummary[]> {
  const body = await requestAPI<{ models: IModelSummary[] }>('models');
  return body.models;
}

/** Every model server of the store (`nbmlops serve`), serving first. */
export async function listDeployments(): Promise<IDeployment[]> {
  const body = await requestAPI<IDeploymentList>('deployments');
  return body.deployments;
}

export function getModel(name: string): Promise<IModelDetails> {
  return requestAPI<IModelDetails>(path('models', name));
}

/** Ask for a promotion; a refusal by the gates (409) is a result, not an error. */
export async function promote(name: string, request: IPromotionRequest): Promise<IPromotionResult> {
  try {
    return await requestAPI<IPromotionResult>(`${path('models', name)}/promote`, post(request));
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.body && typeof error.body === 'object') {
      return { ...error.body, accepted: false, error: error.reason };
    }
    throw error;
  }
}

/**
 * Start `nbmlops run` on a notebook; only the given parameters override its defaults. `gates` and `timeout`
 * (seconds a cell may run) are its `--gate` and `--timeout`; a gate that does not parse is an `ApiError` whose
 * body carries `gate_error`.
 */
export function startJob(
  notebook: string,
  parameters: Record<string, unknown>,
  options: { gates?: string[]; timeout?: number | null } = {}
): Promise<IJob> {
  return requestAPI<IJob>('jobs', post({ notebook, parameters, ...options }));
}

export function getJob(jobId: string): Promise<IJob> {
  return requestAPI<IJob>(path('jobs', jobId));
}

export async function listJobs(): Promise<IJob[]> {
  const body = await requestAPI<{ jobs: IJob[] } | IJob[]>('jobs');
  return Array.isArray(body) ? body : body.jobs;
}

export function cancelJob(jobId: string): Promise<IJob> {
  return requestAPI<IJob>(`${path('jobs', jobId)}/cancel`, post({}));
}
