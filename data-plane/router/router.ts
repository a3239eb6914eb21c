import { LoomError } from '../../common/errors.js';
import { normalizeRequestHost, wildcardSuffix } from './host.js';
import { normalizeCheckedPath } from './path.js';
import { hasStaticLength } from './path-node.js';
import { slotEntry, type PathTree, type Slot } from './path-tree.js';
import { extractParams, type RouteEntry, type SearchState } from './route-entry.js';
import { compareStrings, RouteIndex } from './route-index.js';
import { sortSteps } from './sort-steps.js';
import { MissingRouteError, type StaticChanges } from './tree-editor.js';
import type { Router, RouterMatch, RouterRoute } from './types.js';

const NOT_FOUND: RouterMatch<never> = Object.freeze({ kind: 'not-found' });
/** Static-length set of a router without a hostless static fast path; never read. */
const NO_LENGTHS = new Int32Array(0);

/** Routes added between two yields of a build. */
const ADD_STEP_ROUTES = 32;
/**
 * Default longest stretch, in milliseconds, that `buildRouterAsync` runs without yielding. A
 * request waits for up to one slice at each of its turns of the event loop. While 100,000-route
 * tables were built anew every 500 ms under load, 1 ms slices kept the p99 latency 12 to 17 ms
 * lower than 4 ms slices and made each build about 15 % longer.
 */
export const DEFAULT_SLICE_MS = 1;

/** Options of `buildRouterAsync`. */
export interface BuildRouterOptions {
  /**
   * Maximum stretch of work, in milliseconds, between two yields to the event
   * loop. Default `DEFAULT_SLICE_MS`. A stretch can run over by the cost of one
   * step (a few dozen routes or a few hundred tree nodes).
   */
  sliceMs?: number;
}

/**
 * Builds an immutable router from a complete set of routes. The result never
 * depends on the order of `routes`.
 *
 * A request is matched against the routes of its exact host first, then the
 * wildcard host that covers it (`*.example.com` covers `api.example.com` but
 * neither `example.com` nor `a.api.example.com`), then the routes without a
 * host. A host class without a route for both the path and the method falls
 * through to the next. Within a host class, segments are compared from the
 * left: static text beats a mixed segment, which beats a param, which beats a
 * catch-all. When no route matches both, but some match the path, the result
 * is `method-not-allowed` with the sorted union of their methods. A route
 * that lists GET also matches HEAD where no route at the same place lists HEAD.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid path pattern or
 *   host, on a route without paths, and on two routes that match the same
 *   requests (same host, an overlapping method and the same pattern up to
 *   param names). The message names both routes, the host, the method and
 *   both patterns.
 */
export function buildRouter<T>(routes: readonly RouterRoute<T>[]): Router<T> {
  return runAll(buildSteps(routes));
}

/**
 * Builds the same router as `buildRouter`, but yields to the event loop with
 * `setImmediate` whenever a stretch of work has run for `sliceMs`, so a large
 * build does not stall requests that the process is serving. The caller must
 * not change `routes` until the promise settles.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when `sliceMs` is not a positive
 *   number; rejects with the errors of `buildRouter`.
 */
export async function buildRouterAsync<T>(
  routes: readonly RouterRoute<T>[],
  options: BuildRouterOptions = {},
): Promise<Router<T>> {
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  checkSliceMs(sliceMs);

  // NOTE: slices bound the router's own work, not garbage collection. The tree
  // is one object per node, and the scavenges that copy it as it grows paused a
  // 100,000-route build for 11 to 189 ms at a time on a loaded 2-core machine.
  return runSliced(buildSteps(routes), sliceMs);
}

/** Runs a generator of build steps to its end, yielding to the event loop after each `sliceMs`. */
async function runSliced<R>(steps: Generator<void, R, void>, sliceMs: number): Promise<R> {
  let deadline = performance.now() + sliceMs;
  let step = steps.next();
  while (step.done !== true) {
    if (performance.now() >= deadline) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      deadline = performance.now() + sliceMs;
    }
    step = steps.next();
  }
  return step.value;
}

/** Runs a generator of build steps to its end in one go. */
function runAll<R>(steps: Generator<void, R, void>): R {
  let step = steps.next();
  while (step.done !== true) step = steps.next();
  return step.value;
}

/**
 * Checks a slice length for `buildRouterAsync` and the table builds.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when `sliceMs` is not a positive finite number.
 */
export function checkSliceMs(sliceMs: number): void {
  if (!(sliceMs > 0) || !Number.isFinite(sliceMs)) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `sliceMs must be a positive number of milliseconds, such as ${DEFAULT_SLICE_MS} (got ${String(sliceMs)})`,
    );
  }
}

/**
 * Adds and seals the routes, yielding after each small chunk of work. A route set that fails
 * is added again in name order, so the error reported is the same in every input order. A
 * route set that builds needs no sort, because the router it builds does not depend on the order.
 */
function* buildSteps<T>(routes: readonly RouterRoute<T>[]): Generator<void, Router<T>, void> {
  try {
    return yield* addSteps(routes);
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    const sorted = yield* sortSteps(routes, (a, b) => compareStrings(a.name, b.name));
    yield* addSteps(sorted);
    // Whether a route set fails does not depend on the order, so this is not reached.
    throw error;
  }
}

function* addSteps<T>(routes: readonly RouterRoute<T>[]): Generator<void, Router<T>, void> {
  const index = new RouteIndex<T>();
  for (let i = 0; i < routes.length; i++) {
    index.add(routes[i]);
    if (i % ADD_STEP_ROUTES === ADD_STEP_ROUTES - 1) yield;
  }
  yield* index.sealSteps();
  return new TreeRouter(index, routes.length);
}

/**
 * Builds the router of a changed route set from the router of the previous set, which keeps
 * serving unchanged. `removed` are routes of the previous set (the same objects or equal
 * ones) and `added` the routes that replace them, so a changed route is in both. The work is
 * proportional to the changes, and the result matches requests as `buildRouter` over the
 * whole new set would.
 *
 * Resolves to null when the change cannot be applied this way, and the caller then builds
 * the router anew. That happens when `previous` was not built by this module, when a route
 * to remove is not in it, and on a conflict or an invalid pattern. A new build reports the
 * error in the same words whatever order routes arrive in.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when `sliceMs` is not a positive number.
 */
export async function updateRouterAsync<T>(
  previous: Router<T>,
  removed: readonly RouterRoute<T>[],
  added: readonly RouterRoute<T>[],
  options: BuildRouterOptions = {},
): Promise<Router<T> | null> {
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  checkSliceMs(sliceMs);
  return runSliced(updateSteps(previous, removed, added), sliceMs);
}

/** Runs `updateRouterAsync` in one go; tests compare its result with `buildRouter`. */
export function updateRouter<T>(
  previous: Router<T>,
  removed: readonly RouterRoute<T>[],
  added: readonly RouterRoute<T>[],
): Router<T> | null {
  return runAll(updateSteps(previous, removed, added));
}

function* updateSteps<T>(
  previous: Router<T>,
  removed: readonly RouterRoute<T>[],
  added: readonly RouterRoute<T>[],
): Generator<void, Router<T> | null, void> {
  if (!(previous instanceof TreeRouter)) return null;
  const index = new RouteIndex<T>(previous.index);
  try {
    for (let i = 0; i < removed.length; i++) {
      index.remove(removed[i]);
      if (i % ADD_STEP_ROUTES === ADD_STEP_ROUTES - 1) yield;
    }
    for (let i = 0; i < added.length; i++) {
      index.add(added[i]);
      if (i % ADD_STEP_ROUTES === ADD_STEP_ROUTES - 1) yield;
    }
  } catch (error) {
    if (error instanceof LoomError || error instanceof MissingRouteError) return null;
    throw error;
  }
  yield* index.sealSteps();
  return new TreeRouter(index, previous.size - removed.length + added.length);
}

class TreeRouter<T> implements Router<T> {
  readonly size: number;
  /** The index the router was made from, which `updateRouterAsync` forks. */
  readonly index: RouteIndex<T>;
  readonly #exactHosts: Map<string, PathTree<T>>;
  readonly #wildcardHosts: Map<string, PathTree<T>>;
  readonly #anyHost: PathTree<T> | null;
  /** True when some route names a host, so the Host header takes part in matching. */
  readonly #hosted: boolean;
  /** Static slots of the any-host tree by path when no route names a host, else null. */
  readonly #hostlessStatic: Readonly<Record<string, Slot<T> | undefined>> | null;
  /** Static slots that edits changed, read before `#hostlessStatic` (see `PathTree`). */
  readonly #hostlessChanges: Readonly<StaticChanges<T>> | null;
  /** Lengths of the paths in `#hostlessStatic` (see `hasStaticLength`). */
  readonly #hostlessLengths: Int32Array;
  readonly #state: SearchState;

  constructor(index: RouteIndex<T>, size: number) {
    this.#exactHosts = index.exactHosts;
    this.#wildcardHosts = index.wildcardHosts;
    this.#anyHost = index.anyHost;
    this.#hosted = this.#exactHosts.size > 0 || this.#wildcardHosts.size > 0;
    const hostless = this.#hosted ? null : this.#anyHost;
    this.#hostlessStatic = hostless === null ? null : hostless.staticSlots;
    this.#hostlessChanges = hostless === null ? null : hostless.staticChanges;
    this.#hostlessLengths = hostless === null ? NO_LENGTHS : hostless.staticLengths;
    this.#state = index.state;
    this.index = index;
    this.size = size;
  }

  find(method: string, host: string | undefined, path: string): RouterMatch<T> {
    const statics = this.#hostlessStatic;
    if (statics !== null && hasStaticLength(this.#hostlessLengths, path.length)) {
      // A fully static route is the best match a path can have, so a hit on a path that is
      // already in normalized form is the result, without normalizing or walking the tree.
      const changes = this.#hostlessChanges;
      let slot = changes === null ? undefined : changes[path];
      if (slot === undefined) slot = statics[path];
      if (slot !== undefined && slot !== null && slot.requestForm) {
        const entry = slotEntry(slot, method);
        if (entry !== null && entry.match !== null) return entry.match;
      }
    }
    return this.#find(method, host, path);
  }

  /** Finds the route for a request that missed the static fast path. */
  #find(method: string, host: string | undefined, path: string): RouterMatch<T> {
    const hostName = host !== undefined && this.#hosted ? normalizeRequestHost(host) : '';
    // The exact host comes first, so its static hit is the result as well.
    const exact = hostName === '' ? undefined : this.#exactHosts.get(hostName);
    if (exact !== undefined) {
      const entry = exact.findStatic(method, path);
      if (entry !== null && entry.match !== null) return entry.match;
    }

    // Normalizing never adds a `%`, so the params of a path without one need no decoding.
    const escaped = path.indexOf('%') !== -1;
    const normalized = normalizeCheckedPath(path, escaped);
    if (typeof normalized !== 'string') return path === '*' ? NOT_FOUND : normalized;

    const state = this.#state;
    state.pathMatched = false;
    let entry: RouteEntry<T> | null = null;
    if (hostName !== '') entry = this.#findByHost(method, hostName, normalized);
    const anyHost = this.#anyHost;
    if (entry === null && anyHost !== null) {
      // `find` above already tried the static paths when the request path was in normalized form.
      entry =
        this.#hostlessStatic !== null && normalized === path
          ? anyHost.search(method, normalized, state)
          : anyHost.find(method, normalized, state);
    }

    if (entry !== null) {
      if (normalized === path) {
        if (entry.match !== null) return entry.match;
        const params = extractParams(entry, normalized, state.bounds, escaped);
        return { kind: 'found', value: entry.value, route: entry.route, params };
      }
      const params =
        entry.match !== null
          ? entry.match.params
          : extractParams(entry, normalized, state.bounds, escaped);
      return { kind: 'found', value: entry.value, route: entry.route, params, path: normalized };
    }
    // Without a route for the path under another method, there is no allow list to collect.
    return state.pathMatched ? this.#methodNotAllowed(hostName, normalized) : NOT_FOUND;
  }

  #findByHost(method: string, host: string, path: string): RouteEntry<T> | null {
    if (host === '') return null;

    const exact = this.#exactHosts.get(host);
    if (exact !== undefined) {
      const entry = exact.find(method, path, this.#state);
      if (entry !== null) return entry;
    }
    const wildcard = this.#wildcardTree(host);
    return wildcard === undefined ? null : wildcard.find(method, path, this.#state);
  }

  #wildcardTree(host: string): PathTree<T> | undefined {
    if (this.#wildcardHosts.size === 0) return undefined;
    const suffix = wildcardSuffix(host);
    return suffix === null ? undefined : this.#wildcardHosts.get(suffix);
  }

  listMethods(host: string | undefined, path: string): string[] {
    const hostName = host !== undefined && this.#hosted ? normalizeRequestHost(host) : '';
    const normalized = normalizeCheckedPath(path, path.indexOf('%') !== -1);
    if (typeof normalized !== 'string') return [];
    return [...this.#collectMethods(hostName, normalized)].sort(compareStrings);
  }

  /** Returns method-not-allowed with the methods of every host class's routes for the path. */
  #methodNotAllowed(host: string, path: string): RouterMatch<T> {
    const allow = this.#collectMethods(host, path);
    if (allow.size === 0) return NOT_FOUND;
    return { kind: 'method-not-allowed', allow: [...allow].sort(compareStrings) };
  }

  /** Collects the listed methods of every host class's routes for a normalized path. */
  #collectMethods(host: string, path: string): Set<string> {
    const allow = new Set<string>();
    if (host !== '') {
      this.#exactHosts.get(host)?.collectMethods(path, allow);
      this.#wildcardTree(host)?.collectMethods(path, allow);
    }
    this.#anyHost?.collectMethods(path, allow);
    // Every GET route also matches HEAD (see PathTree.find).
    if (allow.has('GET')) allow.add('HEAD');
    return allow;
  }
}
