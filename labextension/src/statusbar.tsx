/**
 * The status bar item naming the tracking store in use, in an error state when the server
 * cannot reach it. Clicking it checks again.
 */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { getStatus } from './api';
import { storeStatusText } from './model';
import { IStoreStatus } from './types';

const POLL_MS = 30000;

export class StoreStatusItem extends ReactWidget {
  constructor() {
    super();
    this.addClass('nbmlops-StoreStatus');
    this.node.setAttribute('role', 'status');
    void this.check();
    this._timer = window.setInterval(() => void this.check(), POLL_MS);
    this.node.addEventListener('click', () => void this.check());
  }

  async check(): Promise<void> {
    try {
      this._status = await getStatus();
      this._failure = null;
    } catch (error) {
      this._failure = (error as Error).message || String(error);
    }
    this.update();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  protected render(): JSX.Element {
    const { text, title, ok } = storeStatusText(this._status, this._failure);
    this.toggleClass('nbmlops-lab-mod-error', !ok);
    this.node.title = title;
    return <span className="nbmlops-lab-store">{text}</span>;
  }

  private _status: IStoreStatus | null = null;
  private _failure: string | null = null;
  private _timer: number;
}
