import { after } from 'node:test';

import { createLogger } from '../../common/logger.js';
import { describeBuildFailure } from '../../data-plane/build-table.js';
import type { RouteBinding, RoutingTable } from '../../data-plane/table.js';
import { compareStrings } from '../../data-plane/router/route-index.js';
import { UpstreamRegistry } from '../../data-plane/upstreams/registry.js';
import type { Upstream } from '../../proto/gen/loom/v1/config.js';

/** A request that a table is asked to route. */
export interface TableRequest {
  method: string;
  host: string | undefined;
  path: string;
}

/** A lookup result reduced to what a full build and an update must agree on. */
export type LookupResult =
  | {
      kind: 'found';
      route: string;
      params: [string, string][];
      /** The bound route as JSON, so a stale binding of a changed route shows. */
      bindingRoute: string;
      hasBalancer: boolean;
    }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' }
  | { kind: 'bad-request'; reason: string };

const logger = createLogger({ name: 'test', level: 'silent' });
const registries: UpstreamRegistry[] = [];

after(async () => {
  for (const registry of registries) await registry.close();
});

/** Returns a new upstream registry, closed after the test file's tests. */
export function registry(): UpstreamRegistry {
  const created = new UpstreamRegistry({ logger });
  registries.push(created);
  return created;
}

/** Returns an upstream with one target on 127.0.0.1 at `port`. */
export function upstream(name: string, port: number): Upstream {
  return { name, targets: [{ url: `http://127.0.0.1:${port}`, weight: 1 }] };
}

/**
 * Routes each of `requests` through `table`. The pass is synchronous, so no build can change a
 * bound route during it, and each route object is serialized once per pass.
 */
export function lookupAll(table: RoutingTable, requests: readonly TableRequest[]): LookupResult[] {
  const routeJson = new Map<object, string>();
  return requests.map((request) => lookupWith(table, request, routeJson));
}

function lookupWith(
  table: RoutingTable,
  request: TableRequest,
  routeJson: Map<object, string>,
): LookupResult {
  const match = table.router.find(request.method, request.host, request.path);
  if (match.kind !== 'found') return copyPlain(match) as LookupResult;
  const binding: RouteBinding = match.value;
  let bindingRoute = routeJson.get(binding.route);
  if (bindingRoute === undefined) {
    bindingRoute = JSON.stringify(binding.route);
    routeJson.set(binding.route, bindingRoute);
  }
  return {
    kind: 'found',
    route: match.route,
    params: Object.entries(match.params).sort(([a], [b]) => compareStrings(a, b)),
    bindingRoute,
    hasBalancer: binding.balancer !== undefined,
  };
}

/**
 * Copies arrays and plain objects of primitives, as `structuredClone` does, so that a result
 * kept across builds cannot change with the router's own objects. On these small objects it
 * took a quarter to a sixth of the time of `structuredClone` (Node 20.20, 10^6 calls).
 */
function copyPlain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(copyPlain);
  if (typeof value !== 'object' || value === null) return value;
  const copy: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) copy[key] = copyPlain(item);
  return copy;
}

/** A build's table, or its failure as the proxy would report it. */
export type Outcome = { ok: true; table: RoutingTable } | { ok: false; error: string };

/** Waits for `build` and returns its table or its failure. */
export async function settle(build: Promise<RoutingTable>): Promise<Outcome> {
  try {
    return { ok: true, table: await build };
  } catch (error) {
    return { ok: false, error: describeBuildFailure(error) };
  }
}
