/**
 * The status bar item naming the tracking store in use, in an error state when the server
 * cannot reach it, with the server's reason (refused, no answer, an error status) in its tooltip.
 * It turns red as soon as any call of the panel finds the store unreachable, and checks again every
 * few seconds until the store answers. Clicking it checks again.
 */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { getStatus } from './api';
import { storeStatusText } from './model';
import { IStoreOutcome, storeOutcomes } from './request';
import { IStoreStatus } from './types';

/** How often the store is asked while it answers, and while it does not. */
const POLL_MS = 30000;
const POLL_UNREACHABLE_MS = 5000;

export class StoreStatusItem extends ReactWidget {
  constructor() {
    super();
    this.addClass('nbmlops-StoreStatus');
    this.node.setAttribute('role', 'status');
    this.node.addEventListener('click', () => void this.check());
    storeOutcomes.connect(this._onOutcome, this);
    void this.check();
  }

  /** Ask the server about the store now (one request at a time). */
  async check(): Promise<void> {
    if (this._checking) {
      return;
    }
    this._checking = true;
    try {
      this._status = await getStatus();
      this._failure = null;
    } catch (error) {
      this._failure = (error as Error).message || String(error);
    } finally {
      this._checking = false;
    }
    this.update();
    this._schedule();
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    storeOutcomes.disconnect(this._onOutcome, this);
    super.dispose();
  }

  protected render(): JSX.Element {
    const { text, title, ok } = storeStatusText(this._status, this._failure);
    this.toggleClass('nbmlops-lab-mod-error', !ok);
    this.node.title = title;
    this.node.dataset.reachable = String(ok);
    return <span className="nbmlops-lab-store">{text}</span>;
  }

  private get _reachable(): boolean {
    return this._failure === null && (this._status?.reachable ?? true);
  }

  private _schedule(): void {
    window.clearTimeout(this._timer);
    if (!this.isDisposed) {
      this._timer = window.setTimeout(() => void this.check(), this._reachable ? POLL_MS : POLL_UNREACHABLE_MS);
    }
  }

  /** A call of the panel found the store unreachable (red now, with its reason) or answering again (check). */
  private _onOutcome(_: object, outcome: IStoreOutcome): void {
    if (!outcome.reachable && this._status && this._status.reachable) {
      this._status = { ...this._status, reachable: false, error: outcome.error, experiment_count: null };
      this.update();
      this._schedule();
    } else if (outcome.reachable !== this._reachable) {
      void this.check();
    }
  }

  private _status: IStoreStatus | null = null;
  private _failure: string | null = null;
  private _checking = false;
  private _timer: number | undefined = undefined;
}
