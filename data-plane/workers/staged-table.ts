import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { compileRouteActions, type RouteActions } from '../proxy/route-actions.js';
import { buildRouterAsync } from '../router/router.js';
import type { RouteBinding, RoutingTable } from '../table.js';
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
 * It runs the same steps as `buildTable`, split in two: a staged snapshot that is never
 * committed changes nothing.
 *
 * @param extraResponseHeaders names and values added to every route's response headers.
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid route or upstream.
 */
export async function stageTable(
  snapshot: Snapshot,
  upstreams: UpstreamRegistry,
  extraResponseHeaders: readonly string[] = [],
): Promise<StagedTable> {
  const bindings = snapshot.routes.map((route): RouteBinding => ({
    route,
    actions: withResponseHeaders(compileRouteActions(route), extraResponseHeaders),
    balancer: undefined,
  }));
  const router = await buildRouterAsync(
    bindings.map((binding) => ({
      name: binding.route.name,
      hosts: binding.route.hosts,
      paths: binding.route.paths,
      methods: binding.route.methods,
      value: binding,
    })),
  );
  upstreams.validate(snapshot.upstreams);

  return {
    epoch: snapshot.epoch,
    version: snapshot.version,
    routes: router.size,
    commit() {
      const balancers = upstreams.update(snapshot.upstreams);
      for (const binding of bindings) binding.balancer = balancers.get(binding.route.upstream);
      return Object.freeze({
        epoch: snapshot.epoch,
        version: snapshot.version,
        hash: snapshot.hash,
        router,
      });
    },
  };
}

function withResponseHeaders(actions: RouteActions, headers: readonly string[]): RouteActions {
  if (headers.length === 0) {
    return actions;
  }
  return Object.freeze({ ...actions, responseSet: [...actions.responseSet, ...headers] });
}
