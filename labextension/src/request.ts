import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

/** The URL prefix of the server extension's routes, below the server's base URL. */
export const API_ROOT = 'nbmlops/api';

/**
 * A refusal from the server extension: the HTTP status and the `error` reason of its JSON body.
 * `body` is the whole parsed body (a refused promotion carries its decision there).
 */
export class ApiError extends ServerConnection.ResponseError {
  readonly status: number;
  readonly reason: string;
  readonly body: any;

  constructor(response: Response, reason: string, body: any) {
    super(response, reason);
    this.status = response.status;
    this.reason = reason;
    this.body = body;
  }
}

/** What a call to the server extension said about the tracking store behind it. */
export interface IStoreOutcome {
  /** false when the call answered 503 (the store could not be read) */
  reachable: boolean;
  /** the server's one-line reason when unreachable */
  error: string | null;
}

const outcomes = new Signal<object, IStoreOutcome>({});

/**
 * Emitted after each call of a route that reads the tracking store (runs, models, deployments): whether the store
 * answered. The status bar turns red at the first 503 instead of waiting for its next check.
 */
export const storeOutcomes: ISignal<object, IStoreOutcome> = outcomes;

const STORE_ROUTES = /^(runs|models|deployments)(\/|\?|$)/;

/** The absolute address of a route of the server extension (`runs/<id>/artifact?path=...`). */
export function apiUrl(endPoint: string, settings: ServerConnection.ISettings = ServerConnection.makeSettings()): string {
  return URLExt.join(settings.baseUrl, API_ROOT, endPoint);
}

/**
 * Call a route of the server extension and return its JSON body.
 *
 * Goes through `ServerConnection.makeRequest`, which adds the token and the XSRF header.
 * Throws `ServerConnection.NetworkError` when the server cannot be reached and `ApiError`
 * for a non-2xx answer.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = apiUrl(endPoint, settings);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let body: any = null;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  const readsStore = STORE_ROUTES.test(endPoint) && (init.method ?? 'GET') === 'GET';
  if (!response.ok) {
    const reason =
      body && typeof body === 'object' && typeof body.error === 'string'
        ? body.error
        : `${response.status} ${response.statusText}`.trim();
    if (readsStore && response.status === 503) {
      outcomes.emit({ reachable: false, error: reason });
    }
    throw new ApiError(response, reason, body);
  }
  if (readsStore) {
    outcomes.emit({ reachable: true, error: null });
  }
  return body as T;
}

/** A query string from the given values, skipping empty ones: `?notebook=a%20b.ipynb&limit=50`. */
export function query(values: Record<string, string | number | null | undefined>): string {
  const parts = Object.entries(values)
    .filter(([, value]) => value !== null && value !== undefined && value !== '')
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}
