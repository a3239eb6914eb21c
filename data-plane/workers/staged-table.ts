import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { prepareTable } from '../build-table.js';
import type { RoutingTable } from '../table.js';
import type { UpstreamRegistry } from '../upstreams/registry.js';

/** A table built from a snapshot and checked, but not yet in service. */
export interface StagedTable {
  readonly epoch: string;
  readonly version: number;
  /** Routes in the table. */
  readonly routes: number;
  /**
   * Updates the upstream pools and returns the finished table. Call it in the same synchronous
   * step that swaps the table in, so no request picks a target whose pool was retired.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when a `tls.caFile` became unreadable since
   *   the table was staged.
   */
  commit(): RoutingTable;
}

/**
 * Builds everything of a snapshot's table that can fail, the router and the upstream checks,
 * and leaves the upstream pools alone until `commit()`. A worker stages each snapshot and
 * commits it only after every worker staged it, so all workers serve the same version.
 *
 * It runs the steps of `buildTable` (see `prepareTable`), split in two: a staged snapshot
 * that is never committed changes nothing.
 *
 * @param extraResponseHeaders names and values added to every route's response headers.
 * @param previous the table the worker serves, whose unchanged routes and router the new table
 *   reuses as `buildTable` does. Unchanged routes are recognized by object identity, so the
 *   snapshot must come from the same `SnapshotDecoder` as the previous one.
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid route or upstream.
 */
export async function stageTable(
  snapshot: Snapshot,
  upstreams: UpstreamRegistry,
  extraResponseHeaders: readonly string[] = [],
  previous?: RoutingTable,
): Promise<StagedTable> {
  const prepared = await prepareTable(snapshot, { extraResponseHeaders, previous });
  if (prepared.upstreamsChanged) upstreams.validate(snapshot.upstreams);

  return {
    epoch: snapshot.epoch,
    version: snapshot.version,
    routes: prepared.router.size,
    commit: () =>
      prepared.finish(prepared.upstreamsChanged ? upstreams.update(snapshot.upstreams) : undefined),
  };
}
