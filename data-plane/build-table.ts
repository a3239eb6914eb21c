import { LoomError } from '../common/errors.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';
import { compileRouteActions } from './proxy/route-actions.js';
import { buildRouterAsync } from './router/router.js';
import type { RouteBinding, RoutingTable } from './table.js';
import type { UpstreamRegistry } from './upstreams/registry.js';

/**
 * Builds a complete routing table from a snapshot. The router is built first,
 * in slices that yield to the event loop so traffic keeps flowing during a
 * large build. The upstream pools are updated only when it succeeded, so a
 * snapshot that fails to build changes nothing and the caller nacks it.
 * Callers run one build at a time per registry; the data plane applies
 * snapshots one after another.
 */
export async function buildTable(
  snapshot: Snapshot,
  upstreams: UpstreamRegistry,
): Promise<RoutingTable> {
  // NOTE: this loop does not yield. For 100,000 routes it blocked the event
  // loop for 34 to 250 ms on a loaded 2-core machine, outside the sliced build.
  const bindings = snapshot.routes.map((route): RouteBinding => ({
    route,
    actions: compileRouteActions(route),
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
  const balancers = upstreams.update(snapshot.upstreams);
  for (const binding of bindings) binding.balancer = balancers.get(binding.route.upstream);

  return Object.freeze({
    epoch: snapshot.epoch,
    version: snapshot.version,
    hash: snapshot.hash,
    router,
  });
}

/** Converts any failure of a build into the error text of a nack. */
export function describeBuildFailure(error: unknown): string {
  if (error instanceof LoomError) return error.message;
  return `table build failed: ${error instanceof Error ? error.message : String(error)}`;
}
