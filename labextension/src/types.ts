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
  artifacts_truncated?: boolean;
  /** metrics logged more than once: `[step, value]` by step, thinned to a few hundred points */
  series?: Record<string, Array<[number, number | null]>>;
  series_truncated?: boolean;
  /** why a FAILED run failed: its exception (or nbmlops' finding) and the traceback artifact, if any */
  error?: IRunError | null;
  ui_url: string | null;
}

export interface IRunError {
  type: string | null;
  message: string | null;
  traceback: string | null;
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
  /** where the version comes from, as its registration tagged it (absent from older servers) */
  lineage?: IVersionLineage;
  /** the run that registered it; null when the store no longer has it (absent from older servers) */
  run?: IVersionRun | null;
}

export interface IVersionLineage {
  notebook: string | null;
  cell_id: string | null;
  git_commit: string | null;
  model_class: string | null;
  /** the headless notebook run the registering cell ran in */
  parent_run_id: string | null;
  /** fingerprint of the training features */
  features: string | null;
  /** variable -> fingerprint */
  training: Record<string, string>;
  evaluation: Record<string, string>;
}

/** A version's source run. */
export interface IVersionRun {
  run_id: string;
  name: string | null;
  status: string;
  start_time: Time;
  end_time: Time;
  metrics: Record<string, number | null>;
  /** the run in the MLflow UI */
  ui_url: string | null;
}

/** Where a gate does not follow the grammar: `position` counts characters of `gate`, 0 based. */
export interface IGateSyntaxError {
  gate: string;
  position: number;
  expected: string;
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

/** One gate's outcome on a finished headless run. */
export interface IGateOutcome {
  gate: string;
  passed: boolean;
  message: string;
}

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
  /** the fields below are absent from servers older than the gates and results */
  experiment_id?: string | null;
  /** the gates it was started with (`nbmlops run --gate`) */
  gates?: string[];
  /** seconds one cell may run (`nbmlops run --timeout`) */
  timeout?: number | null;
  /** the run's final metrics (rolled up from its cells), once it ended */
  metrics?: Record<string, number | null> | null;
  /** each gate's outcome, once it ended */
  gate_results?: IGateOutcome[] | null;
  /** from its start to its end, once it ended */
  duration_ms?: number | null;
  /** the run in the MLflow UI, once the store has it */
  run_url?: string | null;
}
