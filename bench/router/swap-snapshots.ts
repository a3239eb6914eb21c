import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { createTable } from './tables.js';

/** Routes of the snapshot swapped in. */
export const SWAP_TABLE = '100000';

/**
 * Makes the versions of the 100,000-route snapshot that the swap benchmarks apply. They are
 * built in memory: a real proxy receives each one decoded from the stream, and decoding is not
 * the router's cost. Each call of the returned function gives the next version.
 *
 * With `change` `one`, one route gets a new object in a new route list each time, as after a
 * one-route change that the proxy's decoder hands over: every other route keeps its object
 * (see `SnapshotDecoder`). With `all`, every route gets a new object, as from a proxy that
 * decodes a whole new table, so the router is built anew.
 */
export function swapSnapshots(upstreamUrl: string, change: 'one' | 'all'): () => Snapshot {
  const table = createTable(SWAP_TABLE);
  const snapshot = Snapshot.fromPartial({
    epoch: 'bench',
    routes: table.routes.map((route, index) => ({
      name: `r${index}`,
      paths: [route.path],
      methods: [route.method],
      upstream: 'echo',
    })),
    upstreams: [{ name: 'echo', targets: [{ url: upstreamUrl, weight: 1 }] }],
  });

  return () => {
    snapshot.version += 1;
    snapshot.hash = `v${snapshot.version}`;
    if (change === 'all') {
      snapshot.routes = snapshot.routes.map((route) => ({ ...route }));
      return snapshot;
    }
    const changed = snapshot.version % snapshot.routes.length;
    snapshot.routes = snapshot.routes.slice();
    snapshot.routes[changed] = { ...snapshot.routes[changed] };
    return snapshot;
  };
}
