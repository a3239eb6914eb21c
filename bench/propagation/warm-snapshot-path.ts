import type { Logger } from '../../common/logger.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { prepareTable } from '../../data-plane/build-table.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { RoutingTable } from '../../data-plane/table.js';

/** Default time budget of `warmSnapshotPath`, in milliseconds of wall time. */
export const DEFAULT_WARMUP_MS = 40;
/** Routes of the synthetic snapshot. */
const WARMUP_ROUTES = 240;
const MAX_ROUNDS = 12;

/**
 * Runs the snapshot path (decoding a StreamResponse with a `SnapshotDecoder`, compiling route
 * actions, building a router) on a synthetic snapshot a few times, until `budgetMs` passes or
 * after a fixed number of rounds, and logs one line when done. It touches no upstream pool,
 * table or metric of a proxy. `proxy-cpu.ts --warmup` runs it before the first snapshot to test
 * whether a proxy's first builds get cheaper when the code is compiled beforehand.
 *
 * NOTE: it did not pay off on the 2-core machine of `docs/benchmarks.md`, Node 20. The first
 * snapshot cost more CPU after it, and the first changes about the same, so `DataPlane` does not
 * run it.
 */
export async function warmSnapshotPath(
  logger: Logger,
  budgetMs = DEFAULT_WARMUP_MS,
): Promise<void> {
  const start = performance.now();
  let rounds = 0;
  try {
    const decoder = new SnapshotDecoder();
    let previous: RoutingTable | undefined;
    while (rounds < MAX_ROUNDS && performance.now() - start < budgetMs) {
      const bytes = StreamResponse.encode({ snapshot: warmupSnapshot(rounds) }).finish();
      const snapshot = decoder.decode(bytes).snapshot!;
      const prepared = await prepareTable(snapshot, { previous });
      previous = prepared.finish(new Map());
      previous.router.find('GET', 'svc1.warmup.invalid', '/warmup/svc1/items/7');
      rounds++;
    }
  } catch (error) {
    logger.warn({ err: error, rounds }, 'snapshot path warmup failed');
    return;
  }
  logger.info(
    { rounds, routes: WARMUP_ROUTES, ms: Number((performance.now() - start).toFixed(1)) },
    'snapshot path warmed',
  );
}

/** Returns a snapshot of routes in the shapes real tables use; `round` changes one route. */
function warmupSnapshot(round: number) {
  const routes: Route[] = [];
  for (let index = 0; index < WARMUP_ROUTES; index++) {
    const service = Math.floor(index / 6);
    const base = `/warmup/svc${service}${index === round ? `-r${round}` : ''}`;
    const shapes = [
      `${base}/health`,
      `${base}/items/:id`,
      `${base}/items/:id/comments/:commentId`,
      `${base}/files/*path`,
      `${base}/users/:user.json`,
      `${base}/orgs/:org/repos`,
    ];
    routes.push({
      name: `warmup-${String(index).padStart(4, '0')}`,
      hosts: index % 12 === 0 ? [`svc${service}.warmup.invalid`] : [],
      paths: [shapes[index % shapes.length]],
      methods: index % 3 === 0 ? [] : ['GET', 'POST'],
      upstream: 'warmup',
      stripPrefix: index % 5 === 0 ? base : undefined,
      requestHeaders:
        index % 7 === 0 ? { set: [{ name: 'x-warmup', value: '1' }], remove: [] } : undefined,
      retries: index % 4 === 0 ? 1 : undefined,
    });
  }
  return {
    version: round + 1,
    epoch: 'warmup',
    hash: `warmup-${round}`,
    routes,
    upstreams: [{ name: 'warmup', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] }],
  };
}
