/**
 * A gate that does not follow the grammar, shown as the server explains it: one line, then the gate in a
 * monospace block with a caret under the character where the parser stopped (wherever a gate is typed: the
 * headless-run dialog, the Models tab's promotion form).
 */

import * as React from 'react';

import { gateCaret } from './results';
import { IGateSyntaxError } from './types';

export function GateErrorView(props: { message: string; error: IGateSyntaxError | null }): JSX.Element {
  const shown = props.error ? gateCaret(props.error) : null;
  return (
    <div className="nbmlops-lab-error nbmlops-lab-gate-error" role="alert">
      <div className="nbmlops-lab-gate-error-line">{props.message}</div>
      {shown && (
        <pre className="nbmlops-lab-gate-caret" aria-hidden="true">
          <span className="nbmlops-lab-gate-text">{shown.text}</span>
          {'\n'}
          <span className="nbmlops-lab-gate-pointer">{shown.caret}</span>
        </pre>
      )}
    </div>
  );
}
