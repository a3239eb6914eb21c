import { LoomError } from '../common/errors.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';
import { buildRouter } from './router/router.js';
import type { RouteBinding, RoutingTable } from './table.js';
import type { UpstreamRegistry } from './upstreams/registry.js';

/**
 * Builds a complete routing table from a snapshot. The router is built first
 * and the upstream pools are updated only when it succeeded, so a snapshot
 * that fails to build changes nothing and the caller nacks it.
 */
export function buildTable(snapshot: Snapshot, upstreams: UpstreamRegistry): RoutingTable {
  const bindings = snapshot.routes.map((route): RouteBinding => ({ route, balancer: undefined }));
  const router = buildRouter(
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
