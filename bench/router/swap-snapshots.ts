import { BinaryWriter } from '@bufbuild/protobuf/wire';

import { DEFAULT_SLICE_MS } from '../../data-plane/router/router.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { createTable } from './tables.js';

/** Routes of the snapshot swapped in. */
export const SWAP_TABLE = '100000';

/** Field number of `snapshot` in the StreamResponse message. */
const RESPONSE_SNAPSHOT_FIELD = 1;

/** Bytes of the path prefix that each version flips to `/bpi/` and back. */
const API_PREFIX = Buffer.from('/api/');

/**
 * Makes the versions of the 100,000-route snapshot that the swap benchmarks apply, as a proxy
 * gets them: each call encodes the next version as the StreamResponse message the control plane
 * sends, and decodes it in slices with the proxy's `SnapshotDecoder`. Decoding is part of what a swap
 * costs, because the decoder compares the new message with the one before to keep the objects
 * of unchanged routes, and so makes a one-route change cheap for the table build.
 *
 * With `change` `one`, each version flips the path of one route between `/api/...` and
 * `/bpi/...`, so one route differs from the version before. Routes whose path starts with
 * `keepPrefix` never change, so the route under load keeps responding. With `all`, every route's
 * path flips, so every route is decoded anew and the router is built anew, as for a proxy's
 * first snapshot.
 */
export function swapSnapshots(
  upstreamUrl: string,
  change: 'one' | 'all',
  keepPrefix = '/api/svc5000/',
): () => Promise<Snapshot> {
  const messages = swapMessages(upstreamUrl, change, keepPrefix);
  const decoder = new SnapshotDecoder();
  return async () => {
    const { snapshot } = await decoder.decodeSliced(messages(), DEFAULT_SLICE_MS);
    if (snapshot === undefined) throw new Error('the swap message contains no snapshot');
    return snapshot;
  };
}

/**
 * Returns a function that encodes the next version of the swapped snapshot as a StreamResponse
 * message. The routes are encoded once, and each version flips bytes of that encoding in place.
 * Every call copies the whole message once, as grpc-js does when it joins the frames of a
 * large message.
 */
export function swapMessages(
  upstreamUrl: string,
  change: 'one' | 'all',
  keepPrefix: string,
): () => Uint8Array {
  const table = createTable(SWAP_TABLE);
  const routes: Route[] = table.routes.map((route, index) => ({
    name: `r${index}`,
    hosts: [],
    paths: [route.path],
    methods: [route.method],
    upstream: 'echo',
  }));
  const entries = routes.map((route) => encodeSnapshot({ routes: [route] }));
  const upstreams = encodeSnapshot({
    upstreams: [{ name: 'echo', targets: [{ url: upstreamUrl, weight: 1 }] }],
  });
  const body = Buffer.concat([...entries, upstreams]);
  const pathStarts = new Int32Array(entries.length);
  let offset = 0;
  for (let index = 0; index < entries.length; index++) {
    pathStarts[index] = body.indexOf(API_PREFIX, offset);
    offset += entries[index].length;
  }
  const changeable = routes
    .map((route, index) => (route.paths[0].startsWith(keepPrefix) ? -1 : index))
    .filter((index) => index >= 0);

  let version = 0;
  return () => {
    version += 1;
    if (change === 'all') {
      for (const index of changeable) flipPath(body, pathStarts[index]);
    } else {
      flipPath(body, pathStarts[changeable[version % changeable.length]]);
    }
    const header = encodeSnapshot({ version, epoch: 'bench', hash: `v${version}` });
    const frame = new BinaryWriter()
      .uint32((RESPONSE_SNAPSHOT_FIELD << 3) | 2)
      .uint32(header.length + body.length)
      .finish();
    return Buffer.concat([frame, header, body]);
  };
}

/** Encodes a Snapshot message with only the given fields set. */
function encodeSnapshot(fields: Partial<Snapshot>): Uint8Array {
  return Snapshot.encode(Snapshot.fromPartial(fields)).finish();
}

/** Turns the path prefix `/api/` at `start` into `/bpi/`, or back. */
function flipPath(body: Buffer, start: number): void {
  body[start + 1] ^= 'a'.charCodeAt(0) ^ 'b'.charCodeAt(0);
}
