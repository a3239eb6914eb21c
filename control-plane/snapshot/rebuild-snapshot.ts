import { createHash } from 'node:crypto';

import type { Logger } from '../../common/logger.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import type { AcceptedContent, AcceptedVersion } from '../store/store.js';
import { encodeContent, publishContent, type PublishedSnapshot } from './build-snapshot.js';
import { ConfigState } from './config-state.js';

/**
 * Rebuilds the snapshot of an accepted version from what the store keeps: the keys at its
 * revision, decoded as the snapshot cache decodes them, or the recorded content bytes as
 * they are. The result carries the hash of the rebuilt content, so the caller compares it
 * with `accepted.hash` before it sends the snapshot.
 */
export function rebuildSnapshot(
  prefix: string,
  accepted: AcceptedVersion,
  content: Extract<AcceptedContent, { kind: 'history' | 'recorded' }>,
  logger: Logger,
): PublishedSnapshot {
  if (content.kind === 'history') {
    const state = new ConfigState(prefix, logger);
    state.reset(content.range);
    const encoded = encodeContent(state.routes(), state.upstreams());
    return publishContent(accepted.epoch, accepted.version, encoded);
  }

  const { routes, upstreams } = Snapshot.decode(content.bytes);
  const hash = createHash('sha256').update(content.bytes).digest('hex');
  return publishContent(accepted.epoch, accepted.version, {
    routes,
    upstreams,
    hash,
    bytes: content.bytes,
  });
}
