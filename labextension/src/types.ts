/**
 * The JSON bodies of the nbmlops server extension's REST API (`/nbmlops/api/...`).
 *
 * Times are whatever the server sends: epoch milliseconds, epoch seconds or ISO 8601 text;
 * `model.ts` reads all three (see `toMillis`).
 */

export type Time = number | string | null;

export type Scalar = string | number | boolean | null;

/** `GET /nbmlops/api/status` */
export interface IStoreStatus {
  tracking_uri: string;
  reachable: boolean;
  error: string | null;
  ui_url: string | null;
  experiment_count: number | null;
}

/** One run of `GET /nbmlops/api/runs?notebook=PATH`. */
export interface IRunSummary {
  run_id: string;
  name: string | null;
  status: string;
  experiment: string | null;
  start_time: Time;
  end_time: Time;
  cell_id: string | null;
  cell_key: string | null;
  execution_count: number | null;
  kind: string | null;
  params: Record<string, Scalar>;
  metrics: Record<string, number | null>;
}

export interface IRunList {
  runs: IRunSummary[];
  notebook: string;
}

export interface IDataset {
  name: string;
  digest: string;
  context: string | null;
}

/** `GET /nbmlops/api/runs/<run_id>` */
export interface IRunDetails {
  run_id: string;
  name: string | null;
  status: string;
  experiment: string | null;
  experiment_id: string | null;
  start_time: Time;
  end_time: Time;
  params: Record<string, Scalar>;
  metrics: Record<string, number | null>;
  tags: Record<string, string>;
  datasets: IDataset[];
  artifacts: string[];
  ui_url: string | null;
}

/** One declared parameter of `GET /nbmlops/api/notebook/parameters`: papermill's inspection. */
export interface IDeclaredParameter {
  name: string;
  /** papermill's inferred type name (`int`, `float`, `str`, `bool`, `list`, ...); null when unknown */
  type: string | null;
  /** the default's source text, as written in the notebook (`0.5`, `'data.csv'`, `[1, 2]`) */
  default: string;
  help: string;
}

export interface INotebookParameters {
  notebook: string;
  parameters: IDeclaredParameter[];
}

export interface IModelSummary {
  name: string;
  latest_version: string | number | null;
  aliases: Record<string, string | number>;
}

export interface IGateCheck {
  kind: string;
  name: string;
  passed: boolean;
  message: string;
}

export interface IDecision {
  at: Time;
  by: string | null;
  alias: string;
  accepted: boolean;
  reason: string | null;
  checks: IGateCheck[];
}

export interface IModelVersion {
  version: string | number;
  run_id: string | null;
  created: Time;
  aliases: string[];
  status: string | null;
  decisions: IDecision[];
}

export interface IModelDetails {
  name: string;
  versions: IModelVersion[];
}

export interface IPromotionRequest {
  version: number;
  alias: string;
  gates: string[];
  beat: string[];
  allow_new_evaluation_data: boolean;
}

export interface IPromotionResult {
  accepted: boolean;
  error?: string;
  promotion?: Record<string, unknown>;
}

/** `queued` until its kernel is up, `running`, then how it ended. */
export type JobStatus = 'queued' | 'running' | 'finished' | 'failed' | 'timeout' | 'killed' | 'cancelled';

/** `GET /nbmlops/api/jobs/<id>` */
export interface IJob {
  job_id: string;
  notebook: string;
  parameters: Record<string, unknown>;
  status: JobStatus;
  exit_code: number | null;
  progress: { done: number; total: number } | null;
  /** The index of the cell executing (or the last one that ran). */
  cell: number | null;
  run_id: string | null;
  experiment: string | null;
  output: string | null;
  error: string | null;
  started: Time;
  ended: Time;
}
