import { LoomError } from '../common/errors.js';
import type { Route } from '../proto/gen/loom/v1/config.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';
import { compileRouteActions, type RouteActions } from './proxy/route-actions.js';
import { buildRouterAsync, checkSliceMs, DEFAULT_SLICE_MS } from './router/router.js';
import type { Router, RouterRoute } from './router/types.js';
import type { RouteBinding, RoutingTable } from './table.js';
import type { Balancer } from './upstreams/balancer.js';
import type { UpstreamRegistry } from './upstreams/registry.js';

/** Options of `buildTable` and `prepareTable`. */
export interface BuildTableOptions {
  /** Names and values added to every route's response headers. */
  extraResponseHeaders?: readonly string[];
  /**
   * Maximum stretch of work, in milliseconds, between two yields to the event loop. Default
   * `DEFAULT_SLICE_MS`.
   */
  sliceMs?: number;
}

/**
 * A table whose routes are compiled and whose router is built, but whose routes have no
 * balancers yet. `finish` completes it once the upstream pools are updated.
 */
export interface PreparedTable {
  readonly router: Router<RouteBinding>;
  /**
   * Sets each route's balancer from `balancers`, by upstream name, and returns the frozen
   * table. Routes whose upstream is missing get none, and the proxy returns 502 for them.
   */
  finish(balancers: ReadonlyMap<string, Balancer>): RoutingTable;
}

/**
 * A route binding that is also the router's input for its route, so a build allocates one
 * object per route instead of two that the garbage collector copies while the build runs.
 */
class Binding implements RouteBinding, RouterRoute<RouteBinding> {
  readonly route: Route;
  readonly actions: RouteActions;
  balancer: Balancer | undefined = undefined;

  constructor(route: Route, actions: RouteActions) {
    this.route = route;
    this.actions = actions;
  }

  get name(): string {
    return this.route.name;
  }

  get hosts(): readonly string[] {
    return this.route.hosts;
  }

  get paths(): readonly string[] {
    return this.route.paths;
  }

  get methods(): readonly string[] {
    return this.route.methods;
  }

  get value(): RouteBinding {
    return this;
  }
}

/** Routes handled between two reads of the clock. */
const CLOCK_STRIDE = 64;

/**
 * Builds a complete routing table from a snapshot. Every per-route step (compiling actions,
 * building the router) runs in slices that yield to the event loop, so traffic keeps flowing
 * on the previous table during a large build. The upstream pools are updated only when that
 * succeeded, so a snapshot that fails to build changes nothing and the caller nacks it.
 * Callers run one build at a time per registry; the data plane applies snapshots one after
 * another.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid route or upstream.
 */
export async function buildTable(
  snapshot: Snapshot,
  upstreams: UpstreamRegistry,
  options: BuildTableOptions = {},
): Promise<RoutingTable> {
  const prepared = await prepareTable(snapshot, options);
  return prepared.finish(upstreams.update(snapshot.upstreams));
}

/**
 * Runs the steps of `buildTable` that depend only on the snapshot: compiles each route's
 * actions and builds the router, yielding to the event loop whenever a slice has run for
 * `sliceMs`. It changes no shared state, so a prepared table that is never finished costs
 * nothing but memory.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid route, and
 *   `LOOM_INVALID_ARGUMENT` on an invalid `sliceMs`.
 */
export async function prepareTable(
  snapshot: Snapshot,
  options: BuildTableOptions = {},
): Promise<PreparedTable> {
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  checkSliceMs(sliceMs);
  const { epoch, version, hash, routes } = snapshot;
  const compile = actionsCompiler(options.extraResponseHeaders ?? []);
  const bindings = new Array<Binding>(routes.length);

  let deadline = performance.now() + sliceMs;
  for (let i = 0; i < routes.length; i++) {
    bindings[i] = new Binding(routes[i], compile(routes[i]));
    if (i % CLOCK_STRIDE === CLOCK_STRIDE - 1 && performance.now() >= deadline) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      deadline = performance.now() + sliceMs;
    }
  }
  const router = await buildRouterAsync(bindings, { sliceMs });

  return {
    router,
    finish(balancers) {
      for (const binding of bindings) binding.balancer = balancers.get(binding.route.upstream);
      return Object.freeze({ epoch, version, hash, router });
    },
  };
}

/**
 * Returns a function that compiles a route's actions. Routes whose actions are all defaults,
 * most of them in a large table, share one frozen object instead of one each.
 */
function actionsCompiler(extraResponseHeaders: readonly string[]): (route: Route) => RouteActions {
  const defaults = compileRouteActions({
    name: '',
    hosts: [],
    paths: [],
    methods: [],
    upstream: '',
  });
  const keys = Object.keys(defaults) as (keyof RouteActions)[];
  const sharedDefaults = withResponseHeaders(defaults, extraResponseHeaders);

  return (route) => {
    const actions = compileRouteActions(route);
    for (const key of keys) {
      if (!sameAction(actions[key], defaults[key])) {
        return withResponseHeaders(actions, extraResponseHeaders);
      }
    }
    return sharedDefaults;
  };
}

/** Returns whether two action fields are equal; empty lists are equal. */
function sameAction(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  return Array.isArray(a) && Array.isArray(b) && a.length === 0 && b.length === 0;
}

function withResponseHeaders(actions: RouteActions, headers: readonly string[]): RouteActions {
  if (headers.length === 0) {
    return actions;
  }
  return Object.freeze({ ...actions, responseSet: [...actions.responseSet, ...headers] });
}

/** Converts any failure of a build into the error text of a nack. */
export function describeBuildFailure(error: unknown): string {
  if (error instanceof LoomError) return error.message;
  return `table build failed: ${error instanceof Error ? error.message : String(error)}`;
}
