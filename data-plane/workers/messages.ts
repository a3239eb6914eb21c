import type { MetricObjectWithValues, MetricValue } from 'prom-client';

/**
 * Messages between the primary and its workers over the cluster IPC channel, which uses the
 * `advanced` serialization so snapshot bytes travel as one binary copy, not JSON.
 *
 * Every request from the primary carries an `id`, and the worker replies to it with one `reply`
 * of the same id. `drain`, `reopen-access-log` and `target-health` get no reply: the worker's
 * exit ends a drain.
 */
export type PrimaryMessage =
  /** `snapshot` is an encoded StreamResponse message that contains the snapshot. */
  | { type: 'stage'; id: number; snapshot: Uint8Array }
  | { type: 'commit'; id: number; version: number }
  | { type: 'discard'; id: number }
  | { type: 'listen'; id: number }
  | { type: 'metrics'; id: number }
  | { type: 'drain'; timeoutMs: number }
  | { type: 'reopen-access-log' }
  | { type: 'target-health'; unhealthy: UnhealthyTarget[] };

/**
 * A target that the primary's active health checks took out of rotation. `target` is the
 * target's origin, because a check requests the origin without the target's base path. A
 * `target-health` message lists every such target, so the latest one replaces all before it.
 */
export interface UnhealthyTarget {
  upstream: string;
  target: string;
}

/** Result that a worker replies with, by request type. */
export interface ReplyResults {
  /** The snapshot is staged: built and checked, not yet serving. */
  stage: { buildMs: number; routes: number };
  commit: Record<string, never>;
  discard: Record<string, never>;
  /** Port the traffic listener is bound to. */
  listen: { port: number };
  metrics: MetricObjectWithValues<MetricValue<string>>[];
}

/** A request that gets a reply. */
export type PrimaryRequest = Extract<PrimaryMessage, { id: number }>;

/** A request before the pool gives it an id. */
export type PrimaryRequestBody = PrimaryRequest extends infer R
  ? R extends PrimaryRequest
    ? Omit<R, 'id'>
    : never
  : never;

/** Messages from a worker to the primary. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'reply'; id: number; ok: true; result: unknown }
  | { type: 'reply'; id: number; ok: false; error: string };

/** Tells whether an IPC message from a worker is one of Loom's, not one of prom-client's. */
export function isWorkerMessage(message: unknown): message is WorkerMessage {
  if (typeof message !== 'object' || message === null) return false;
  const type = (message as { type?: unknown }).type;
  return type === 'ready' || type === 'reply';
}

/** Tells whether an IPC message from the primary is one of Loom's. */
export function isPrimaryMessage(message: unknown): message is PrimaryMessage {
  if (typeof message !== 'object' || message === null) return false;
  const type = (message as { type?: unknown }).type;
  return typeof type === 'string' && PRIMARY_TYPES.has(type);
}

const PRIMARY_TYPES = new Set([
  'stage',
  'commit',
  'discard',
  'listen',
  'metrics',
  'drain',
  'reopen-access-log',
  'target-health',
]);
