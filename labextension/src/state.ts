/**
 * What the extension knows about the active notebook: its runs (refreshed when the notebook
 * changes, after a cell executes, on an interval while the Experiments panel is shown) and the
 * headless runs started for it. The panel, the cell decorations and the commands read it.
 */

import { NotebookActions, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { getJob, listJobs, listRuns } from './api';
import { ICellGroup, groupRunsByCell, jobEnded, lastStatusByCell } from './model';
import { IJob, IRunSummary } from './types';

/** Refreshes after a cell runs: the run reaches the store a moment after the cell ends. */
const AFTER_EXECUTION_MS = [800, 2500, 6000];
const VISIBLE_POLL_MS = 3000; // a dead store shows within seconds while the panel is on screen
const JOB_POLL_MS = 1500;

export class ExperimentsState implements IDisposable {
  constructor(tracker: INotebookTracker) {
    this._tracker = tracker;
    tracker.currentChanged.connect(this._onCurrentChanged, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    this._onCurrentChanged();
  }

  /** Emitted whenever anything below changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted once when a headless run ends. */
  get jobEnded(): ISignal<this, IJob> {
    return this._jobEnded;
  }

  /** The active notebook's path relative to the server root, or null. */
  get notebookPath(): string | null {
    return this._panel ? this._panel.context.path : null;
  }

  get panel(): NotebookPanel | null {
    return this._panel;
  }

  get runs(): readonly IRunSummary[] {
    return this._runs;
  }

  get groups(): readonly ICellGroup[] {
    return this._groups;
  }

  /** Cell id -> status of the cell's newest run. */
  get statuses(): ReadonlyMap<string, string> {
    return this._statuses;
  }

  get loading(): boolean {
    return this._loading;
  }

  /** Why the last refresh failed, or null. */
  get error(): string | null {
    return this._error;
  }

  /** Headless runs of the active notebook, newest first. */
  get jobs(): IJob[] {
    const path = this.notebookPath;
    return Array.from(this._jobs.values())
      .filter(job => job.notebook === path)
      .reverse();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Poll for new runs while the panel is on screen. */
  setVisible(visible: boolean): void {
    window.clearInterval(this._visiblePoll);
    this._visiblePoll = undefined;
    if (visible) {
      this._visiblePoll = window.setInterval(() => void this.refresh(), VISIBLE_POLL_MS);
      void this.refresh();
    }
  }

  /** Fetch the active notebook's runs now (one request at a time; a call meanwhile queues one more). */
  async refresh(): Promise<void> {
    if (this._inFlight) {
      this._again = true;
      return this._inFlight;
    }
    this._inFlight = this._fetchRuns();
    try {
      await this._inFlight;
    } finally {
      this._inFlight = null;
    }
    if (this._again) {
      this._again = false;
      await this.refresh();
    }
  }

  /** Follow a headless run until it ends. */
  addJob(job: IJob): void {
    this._jobs.set(job.job_id, job);
    this._changed.emit();
    this._pollJobs();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearInterval(this._visiblePoll);
    window.clearTimeout(this._jobTimer);
    this._timers.forEach(timer => window.clearTimeout(timer));
    this._tracker.currentChanged.disconnect(this._onCurrentChanged, this);
    NotebookActions.executed.disconnect(this._onExecuted, this);
    Signal.clearData(this);
  }

  private async _fetchRuns(): Promise<void> {
    const path = this.notebookPath;
    if (!path) {
      this._setRuns([], null);
      return;
    }
    this._loading = true;
    this._changed.emit();
    try {
      const body = await listRuns(path);
      if (path === this.notebookPath) {
        this._setRuns(body.runs, null);
      }
    } catch (error) {
      if (path === this.notebookPath) {
        this._setRuns(this._runs, (error as Error).message || String(error));
      }
    } finally {
      this._loading = false;
      this._changed.emit();
    }
  }

  private _setRuns(runs: IRunSummary[], error: string | null): void {
    this._runs = runs;
    this._groups = groupRunsByCell(runs);
    this._statuses = lastStatusByCell(runs);
    this._error = error;
    this._changed.emit();
  }

  private _onCurrentChanged(): void {
    const panel = this._tracker.currentWidget;
    if (panel === this._panel) {
      return;
    }
    if (this._panel) {
      this._panel.context.pathChanged.disconnect(this._onPathChanged, this);
    }
    this._panel = panel;
    this._setRuns([], null);
    if (panel) {
      panel.context.pathChanged.connect(this._onPathChanged, this);
      void panel.context.ready.then(() => {
        if (panel === this._panel) {
          void this.refresh();
          void this._loadJobs();
        }
      });
    }
  }

  private _onPathChanged(): void {
    this._setRuns([], null);
    void this.refresh();
  }

  private _onExecuted(_: unknown, args: { notebook: unknown }): void {
    if (!this._panel || args.notebook !== this._panel.content) {
      return;
    }
    this._timers.forEach(timer => window.clearTimeout(timer));
    this._timers = AFTER_EXECUTION_MS.map(delay =>
      window.setTimeout(() => void this.refresh(), delay)
    );
  }

  /** Pick up headless runs started before this page was loaded. */
  private async _loadJobs(): Promise<void> {
    try {
      for (const job of await listJobs()) {
        if (!this._jobs.has(job.job_id)) {
          this._jobs.set(job.job_id, job);
        }
      }
      this._changed.emit();
      this._pollJobs();
    } catch {
      // the jobs list is a convenience: the runs list still works without it
    }
  }

  private _pollJobs(): void {
    if (this._jobTimer !== undefined || this._disposed) {
      return;
    }
    const running = Array.from(this._jobs.values()).filter(job => !jobEnded(job));
    if (running.length === 0) {
      return;
    }
    this._jobTimer = window.setTimeout(async () => {
      await Promise.all(running.map(job => this._updateJob(job.job_id)));
      this._jobTimer = undefined;
      this._pollJobs();
    }, JOB_POLL_MS);
  }

  private async _updateJob(jobId: string): Promise<void> {
    let job: IJob;
    try {
      job = await getJob(jobId);
    } catch (error) {
      return; // try again at the next tick
    }
    const before = this._jobs.get(jobId);
    this._jobs.set(jobId, job);
    this._changed.emit();
    if (before && !jobEnded(before) && jobEnded(job)) {
      this._jobEnded.emit(job);
      void this.refresh();
    }
  }

  private _tracker: INotebookTracker;
  private _panel: NotebookPanel | null = null;
  private _runs: IRunSummary[] = [];
  private _groups: ICellGroup[] = [];
  private _statuses: Map<string, string> = new Map();
  private _loading = false;
  private _error: string | null = null;
  private _inFlight: Promise<void> | null = null;
  private _again = false;
  private _jobs = new Map<string, IJob>();
  private _jobTimer: number | undefined = undefined;
  private _visiblePoll: number | undefined = undefined;
  private _timers: number[] = [];
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
  private _jobEnded = new Signal<this, IJob>(this);
}
