import { createHash } from 'node:crypto';

import { BinaryWriter } from '@bufbuild/protobuf/wire';

import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

/** A snapshot with its wire encoding, made once and sent as-is to every proxy. */
export interface PublishedSnapshot {
  snapshot: Snapshot;
  /** The encoded StreamResponse that carries this snapshot. */
  encoded: Buffer;
  /** The encoded routes and upstreams (`SnapshotContent.bytes`), a view into `encoded`. */
  content: Uint8Array;
}

/** Routes and upstreams encoded once, with the hash of that encoding. */
export interface SnapshotContent {
  routes: Route[];
  upstreams: Upstream[];
  /** Hex SHA-256 of `bytes`. */
  hash: string;
  /** The `routes` and `upstreams` fields of a Snapshot message. */
  bytes: Uint8Array;
}

/** Field number of `snapshot` in StreamResponse, with wire type 2 (length-delimited). */
const STREAM_RESPONSE_SNAPSHOT_TAG = (1 << 3) | 2;

/**
 * Encodes sorted routes and upstreams and hashes them. The hash covers only
 * the content, so two revisions with the same resources hash equally and the
 * cache publishes neither a new build nor a new send for the second.
 */
export function encodeContent(routes: Route[], upstreams: Upstream[]): SnapshotContent {
  const bytes = Snapshot.encode({ version: 0, epoch: '', hash: '', routes, upstreams }).finish();
  const hash = createHash('sha256').update(bytes).digest('hex');
  return { routes, upstreams, hash, bytes };
}

/**
 * Builds the immutable snapshot and its StreamResponse encoding from content
 * encoded once. Protobuf allows a message's fields in any order, so the
 * version, epoch and hash are encoded on their own and placed before the
 * content bytes instead of encoding the routes a second time.
 */
export function publishContent(
  epoch: string,
  version: number,
  content: SnapshotContent,
): PublishedSnapshot {
  const { routes, upstreams, hash } = content;
  const snapshot: Snapshot = Object.freeze({ version, epoch, hash, routes, upstreams });
  const header = Snapshot.encode({ version, epoch, hash, routes: [], upstreams: [] }).finish();
  const prefix = new BinaryWriter()
    .uint32(STREAM_RESPONSE_SNAPSHOT_TAG)
    .uint32(header.length + content.bytes.length)
    .finish();
  const encoded = Buffer.concat([prefix, header, content.bytes]);
  return { snapshot, encoded, content: encoded.subarray(prefix.length + header.length) };
}

/** Encodes, hashes and publishes in one step; see `encodeContent` and `publishContent`. */
export function buildSnapshot(
  epoch: string,
  version: number,
  routes: Route[],
  upstreams: Upstream[],
): PublishedSnapshot {
  return publishContent(epoch, version, encodeContent(routes, upstreams));
}
