import { LoomError } from '../../common/errors.js';
import { normalizeRequestHost, parseHostPattern, wildcardSuffix } from './host.js';
import { normalizeRequestPath } from './path.js';
import { PathTree } from './path-tree.js';
import { countCaptures, createRouteEntry, extractParams, type RouteEntry } from './route-entry.js';
import { parsePattern, type PathPattern } from './pattern.js';
import type { Router, RouterMatch, RouterRoute } from './types.js';

const NOT_FOUND: RouterMatch<never> = Object.freeze({ kind: 'not-found' });

/**
 * Builds an immutable router from a complete set of routes. The result never
 * depends on the order of `routes`.
 *
 * A request is matched against the routes of its exact host first, then the
 * wildcard host that covers it (`*.example.com` covers `api.example.com` but
 * neither `example.com` nor `a.api.example.com`), then the routes without a
 * host. A host class without a route for both the path and the method falls
 * through to the next. Within a host class, the route with the most static
 * segments from the left wins, and a param beats a catch-all at the same
 * segment. When no route matches both, but some match the path, the result is
 * `method-not-allowed` with the sorted union of their methods.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid path pattern or
 *   host, on a route without paths, and on two routes that match the same
 *   requests (same host, an overlapping method and the same pattern up to
 *   param names). The message names both routes, the host, the method and
 *   both patterns.
 */
export function buildRouter<T>(routes: RouterRoute<T>[]): Router<T> {
  return new TreeRouter(routes);
}

class TreeRouter<T> implements Router<T> {
  readonly size: number;
  readonly #exactHosts = new Map<string, PathTree<T>>();
  /** Trees of wildcard hosts by the suffix after `*.`. */
  readonly #wildcardHosts = new Map<string, PathTree<T>>();
  #anyHost: PathTree<T> | null = null;
  /**
   * Where each param of the current match starts, reused by every lookup.
   * Sharing it is safe because `find` is synchronous and calls no outside code.
   */
  #starts = new Int32Array(0);

  constructor(routes: readonly RouterRoute<T>[]) {
    // Sorting by name makes the reported conflict the same in every input order.
    const sorted = [...routes].sort((a, b) => compareStrings(a.name, b.name));
    for (const route of sorted) this.#addRoute(route);

    for (const tree of this.#exactHosts.values()) tree.seal();
    for (const tree of this.#wildcardHosts.values()) tree.seal();
    this.#anyHost?.seal();
    this.size = routes.length;
  }

  find(method: string, host: string | undefined, path: string): RouterMatch<T> {
    const normalized = normalizeRequestPath(path);
    if (typeof normalized !== 'string') return path === '*' ? NOT_FOUND : normalized;

    let hostName = '';
    let entry: RouteEntry<T> | null = null;
    if (host !== undefined && (this.#exactHosts.size > 0 || this.#wildcardHosts.size > 0)) {
      hostName = normalizeRequestHost(host);
      entry = this.#findByHost(method, hostName, normalized);
    }
    if (entry === null && this.#anyHost !== null) {
      entry = this.#anyHost.find(method, normalized, this.#starts);
    }

    if (entry !== null) {
      const params = extractParams(entry, normalized, this.#starts);
      return { kind: 'found', value: entry.value, route: entry.route, params };
    }
    return this.#unmatched(hostName, normalized);
  }

  #findByHost(method: string, host: string, path: string): RouteEntry<T> | null {
    if (host === '') return null;

    const exact = this.#exactHosts.get(host);
    if (exact !== undefined) {
      const entry = exact.find(method, path, this.#starts);
      if (entry !== null) return entry;
    }
    const wildcard = this.#wildcardTree(host);
    return wildcard === undefined ? null : wildcard.find(method, path, this.#starts);
  }

  #wildcardTree(host: string): PathTree<T> | undefined {
    if (this.#wildcardHosts.size === 0) return undefined;
    const suffix = wildcardSuffix(host);
    return suffix === null ? undefined : this.#wildcardHosts.get(suffix);
  }

  /** Returns method-not-allowed when a route of any host class matches the path, else not-found. */
  #unmatched(host: string, path: string): RouterMatch<T> {
    const allow = new Set<string>();
    if (host !== '') {
      this.#exactHosts.get(host)?.collectMethods(path, allow);
      this.#wildcardTree(host)?.collectMethods(path, allow);
    }
    this.#anyHost?.collectMethods(path, allow);

    if (allow.size === 0) return NOT_FOUND;
    return { kind: 'method-not-allowed', allow: [...allow].sort(compareStrings) };
  }

  #addRoute(route: RouterRoute<T>): void {
    if (route.paths.length === 0) {
      throw new LoomError(
        'LOOM_SNAPSHOT_REJECTED',
        `route ${JSON.stringify(route.name)} has no paths; give at least one path pattern such as "/"`,
      );
    }

    const methods = uniqueMethods(route);
    const patterns = new Map<string, PathPattern>();
    for (const source of route.paths) {
      const pattern = parsePattern(route.name, source);
      // The same path listed twice (in any spelling) is one path.
      if (!patterns.has(pattern.key)) patterns.set(pattern.key, pattern);
    }
    const trees = this.#treesFor(route);

    for (const pattern of patterns.values()) {
      if (countCaptures(pattern) > this.#starts.length) {
        this.#starts = new Int32Array(countCaptures(pattern));
      }
      const entry = createRouteEntry(route.name, route.value, pattern);
      for (const tree of trees) tree.insert(pattern, methods, entry);
    }
  }

  /** Returns the trees a route belongs to, creating them on first use. */
  #treesFor(route: RouterRoute<T>): Set<PathTree<T>> {
    if (route.hosts.length === 0) {
      this.#anyHost ??= new PathTree('any host');
      return new Set([this.#anyHost]);
    }

    const trees = new Set<PathTree<T>>();
    for (const raw of route.hosts) {
      const host = parseHostPattern(route.name, raw);
      const [index, key, label] =
        host.kind === 'exact'
          ? [this.#exactHosts, host.name, host.name]
          : [this.#wildcardHosts, host.suffix, '*.' + host.suffix];
      let tree = index.get(key);
      if (tree === undefined) {
        tree = new PathTree(`host ${JSON.stringify(label)}`);
        index.set(key, tree);
      }
      trees.add(tree);
    }
    return trees;
  }
}

/** Returns the route's methods deduplicated and sorted; empty means any method. */
function uniqueMethods(route: RouterRoute<unknown>): string[] {
  if (route.methods.includes('')) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(route.name)} has an empty method; leave methods empty to match any method`,
    );
  }
  return [...new Set(route.methods)].sort(compareStrings);
}

/** Orders strings by UTF-16 code units, like the default `sort`. */
function compareStrings(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}
