/**
 * The panel's error state: why the tracking store cannot be read, and a button that asks again.
 */

import * as React from 'react';

export function StoreError(props: {
  error: string;
  retrying: boolean;
  onRetry: () => void;
  /** what cannot be shown: `Runs unavailable` unless told */
  title?: string;
}): JSX.Element {
  return (
    <div className="nbmlops-lab-store-error" role="alert">
      <div className="nbmlops-lab-store-error-title">{props.title ?? 'Runs unavailable'}</div>
      <div className="nbmlops-lab-store-error-reason">{props.error}</div>
      <button
        className="jp-mod-styled jp-mod-accept nbmlops-lab-retry"
        disabled={props.retrying}
        onClick={props.onRetry}
      >
        {props.retrying ? 'Retrying…' : 'Retry'}
      </button>
    </div>
  );
}
