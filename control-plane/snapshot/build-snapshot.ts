import { createHash } from 'node:crypto';

import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

/** A snapshot with its wire encoding, made once and sent as-is to every proxy. */
export interface PublishedSnapshot {
  snapshot: Snapshot;
  /** The encoded StreamResponse that carries this snapshot. */
  encoded: Buffer;
}

/**
 * Builds an immutable snapshot from sorted routes and upstreams. The hash
 * covers only the content, so two revisions with the same resources hash
 * equally and the second is not sent.
 */
export function buildSnapshot(
  epoch: string,
  version: number,
  routes: Route[],
  upstreams: Upstream[],
): PublishedSnapshot {
  const content = Snapshot.encode({ version: 0, epoch: '', hash: '', routes, upstreams }).finish();
  const hash = createHash('sha256').update(content).digest('hex');
  const snapshot: Snapshot = Object.freeze({ version, epoch, hash, routes, upstreams });
  const encoded = Buffer.from(StreamResponse.encode({ snapshot }).finish());
  return { snapshot, encoded };
}
