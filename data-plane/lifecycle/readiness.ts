import type { EscapedSlashAction } from '../proxy/exchange.js';

/** Where the table in service came from. */
export type TableSource = 'control-plane' | 'snapshot-cache';

/** What the readiness answer depends on. */
export interface ReadinessState {
  table: { epoch: string; version: number } | undefined;
  source: TableSource;
  draining: boolean;
  controlPlaneConnected: boolean;
  /** Message of the control plane's rejection of the proxy id; undefined without one. */
  idRejection?: string;
  /** The `--escaped-slashes` action of the traffic listener, reported in every body. */
  escapedSlashes: EscapedSlashAction;
}

/** HTTP status and JSON body of `GET /readyz`. */
export interface Readiness {
  status: 200 | 503;
  body: Record<string, unknown>;
}

/**
 * Decides readiness: not ready while draining or before any table is in
 * service, ready otherwise. The body names the table's source; a table read
 * from the snapshot cache counts as the control plane's once the stream is up,
 * because the control plane then sends any newer version. While the control
 * plane rejects the proxy id, the body's `reason` contains the rejection, which
 * names the id and the address of the proxy that uses it. A proxy with a table stays ready
 * then, because its table still serves traffic, but no newer version reaches it. Every body
 * names the proxy's `escapedSlashes` setting, so a rollout of the flag can be checked per pod.
 */
export function readiness(state: ReadinessState): Readiness {
  const answer = decideReadiness(state);
  answer.body.escapedSlashes = state.escapedSlashes;
  return answer;
}

function decideReadiness(state: ReadinessState): Readiness {
  if (state.draining) {
    return { status: 503, body: { status: 'draining', reason: 'the proxy is shutting down' } };
  }
  if (state.table === undefined && state.idRejection !== undefined) {
    return {
      status: 503,
      body: {
        status: 'not_ready',
        reason: `no snapshot applied yet, because the control plane rejected the stream. ${state.idRejection}`,
      },
    };
  }
  if (state.table === undefined) {
    return { status: 503, body: { status: 'not_ready', reason: 'no snapshot applied yet' } };
  }

  const fromCache = state.source === 'snapshot-cache' && !state.controlPlaneConnected;
  const body: Record<string, unknown> = {
    status: 'ready',
    epoch: state.table.epoch,
    version: state.table.version,
    source: fromCache ? 'snapshot-cache' : 'control-plane',
    controlPlane: state.controlPlaneConnected ? 'connected' : 'disconnected',
  };
  if (state.idRejection !== undefined) {
    body.reason =
      'the control plane rejected the stream, so this table gets no newer version. ' +
      state.idRejection;
  }
  return { status: 200, body };
}
