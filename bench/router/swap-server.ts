// A proxy for swap-latency.ts: a DataPlane (the class behind `loom data-plane`)
// that makes its own snapshot messages instead of receiving them from a control
// plane, so that the parent can have a 100,000-route table swapped in while load runs.
//
// Messages from the parent: { swapForMs } applies new versions of the large
// snapshot back to back for that long, then replies with { swaps, buildMs }
// and the event-loop delay seen meanwhile; { idleForMs } only records the delay.
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
import { swapSnapshots, SWAP_TABLE } from './swap-snapshots.js';
import { createTable } from './tables.js';

const upstreamUrl = process.argv[2];
/** `one`: each version changes one route; `all`: each version has new objects for every route. */
const change = process.argv[3] === 'all' ? 'all' : 'one';
/** Milliseconds between the end of one swap and the start of the next; 0 for back to back. */
const intervalMs = Number(process.argv[4] ?? 0);
/** The swapped table, for the path of the route that the load requests. */
const table = createTable(SWAP_TABLE);
/** The service of that route, `/api/svcK/`, whose routes no version changes. */
const loadService = `${table.lookups.params.path.split('/').slice(0, 3).join('/')}/`;
const nextSnapshot = swapSnapshots(upstreamUrl, change, loadService);

const dataPlane = new DataPlane({
  // Nothing listens on port 1; the snapshot client retries in the background.
  controlPlanes: ['127.0.0.1:1'],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'swap-bench',
  logger: pino({ level: 'silent' }),
});
await dataPlane.start();
await dataPlane.applySnapshot(await nextSnapshot());
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
      await dataPlane.applySnapshot(await nextSnapshot());
      buildMs.push(performance.now() - started);
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
