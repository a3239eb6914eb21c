// A proxy for swap-latency.ts: a DataPlane (the class behind `loom data-plane`)
// whose snapshots come from its parent over IPC instead of a control plane, so
// the parent can swap a 100,000-route table in while load runs.
//
// Messages from the parent: { swapForMs } applies new versions of the large
// snapshot back to back for that long, then replies with { swaps, buildMs }
// and the event-loop delay seen meanwhile; { idleForMs } only records the delay.
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { createTable } from './tables.js';

/** Routes of the snapshot swapped in. */
export const SWAP_TABLE = '100000';

const upstreamUrl = process.argv[2];
/** `one`: each version changes one route; `all`: each version has new objects for every route. */
const change = process.argv[3] === 'all' ? 'all' : 'one';
/** Milliseconds between the end of one swap and the start of the next; 0 for back to back. */
const intervalMs = Number(process.argv[4] ?? 0);
const table = createTable(SWAP_TABLE);
// One snapshot, built once: a real proxy receives each one decoded from the
// stream, and decoding is not the router's cost. Each swap gets a new version.
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

/**
 * Returns the next version. With `change` one, one route gets a new object each time, as after
 * a one-route change that the proxy's decoder hands over: every other route keeps its object
 * (see `SnapshotDecoder`). With `all`, every route gets a new object, as from a proxy that
 * decodes a whole new table, so the router is built anew.
 */
function nextSnapshot(): Snapshot {
  snapshot.version += 1;
  snapshot.hash = `v${snapshot.version}`;
  if (change === 'all') {
    snapshot.routes = snapshot.routes.map((route) => ({ ...route }));
    return snapshot;
  }
  // A new list per version, as the proxy's decoder makes.
  const changed = snapshot.version % snapshot.routes.length;
  snapshot.routes = snapshot.routes.slice();
  snapshot.routes[changed] = { ...snapshot.routes[changed] };
  return snapshot;
}

const dataPlane = new DataPlane({
  // Nothing listens on port 1; the snapshot client retries in the background.
  controlPlanes: ['127.0.0.1:1'],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'swap-bench',
  logger: pino({ level: 'silent' }),
});
await dataPlane.start();
await dataPlane.applySnapshot(nextSnapshot());
process.send?.({ port: dataPlane.port, path: table.lookups.params.path });

interface PhaseMessage {
  swapForMs?: number;
  idleForMs?: number;
  stop?: boolean;
}

process.on('message', (message: PhaseMessage) => {
  if (message.stop) {
    void dataPlane.stop().then(() => process.exit(0));
    return;
  }
  void runPhase(message).then((result) => process.send?.(result));
});

async function runPhase(message: PhaseMessage): Promise<Record<string, unknown>> {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const buildMs: number[] = [];
  if (message.swapForMs !== undefined) {
    const until = performance.now() + message.swapForMs;
    while (performance.now() < until) {
      // A proxy receives each snapshot in its own turn of the event loop. Without this, swaps
      // that finish inside one slice would chain as microtasks and starve every request.
      await new Promise((resolve) =>
        intervalMs > 0 ? setTimeout(resolve, intervalMs) : setImmediate(resolve),
      );
      const started = performance.now();
      await dataPlane.applySnapshot(nextSnapshot());
      buildMs.push(Math.round(performance.now() - started));
    }
  } else {
    await new Promise((resolve) => setTimeout(resolve, message.idleForMs ?? 0));
  }
  delay.disable();
  return {
    swaps: buildMs.length,
    buildMs,
    loopDelayP99Ms: Math.round(delay.percentile(99) / 1e4) / 100,
    loopDelayMaxMs: Math.round(delay.max / 1e4) / 100,
  };
}
