import { LoomError } from '../../common/errors.js';
import { parseHostPattern } from './host.js';
import { PathTree } from './path-tree.js';
import { parsePattern, type PathPattern } from './pattern.js';
import {
  compileParamsReader,
  createRouteEntry,
  SearchState,
  type ParamsReader,
} from './route-entry.js';
import type { RouterRoute } from './types.js';

/**
 * The path trees of a route set, one per host class: a Map of exact hosts, a
 * Map of wildcard suffixes (`example.com` for `*.example.com`) and one tree
 * for routes without hosts. Filled by `add`, then sealed once.
 */
export class RouteIndex<T> {
  readonly exactHosts = new Map<string, PathTree<T>>();
  readonly wildcardHosts = new Map<string, PathTree<T>>();
  anyHost: PathTree<T> | null = null;
  /** Sized for the pattern with the most params. */
  readonly state = new SearchState();
  /** Shared names and params readers per distinct list of names; most routes repeat a few. */
  readonly #namesByKey = new Map<string, NamesInfo>();
  /** One shared list per single method, so that most routes add no array of their own. */
  readonly #singleMethods = new Map<string, readonly string[]>();
  /** The one-tree list of every route without hosts. */
  #anyHostTrees: PathTree<T>[] | null = null;

  /**
   * Adds every path of a route to the trees of its hosts.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on a route without paths, an
   *   empty method, an invalid host or path pattern, or a conflict.
   */
  add(route: RouterRoute<T>): void {
    if (route.paths.length === 0) {
      throw new LoomError(
        'LOOM_SNAPSHOT_REJECTED',
        `route ${JSON.stringify(route.name)} has no paths; give at least one path pattern such as "/"`,
      );
    }

    const methods = this.#methodsOf(route);
    const trees = this.#treesFor(route);
    // Most routes list one path, which needs no deduplication.
    const patterns =
      route.paths.length === 1
        ? [parsePattern(route.name, route.paths[0])]
        : uniquePatterns(route.name, route.paths);

    for (const pattern of patterns) {
      const { names, reader, parentReader } = this.#namesOf(pattern.names);
      this.state.reserve(names.length);
      const entry = createRouteEntry(route.name, route.value, pattern, names, false, reader);
      const last = pattern.segments[pattern.segments.length - 1];
      const parentEntry =
        last.kind === 'catch-all' && last.includesParent
          ? createRouteEntry(route.name, route.value, pattern, names, true, parentReader())
          : undefined;
      for (const tree of trees) tree.insert(pattern, methods, entry, parentEntry);
    }
  }

  /** Seals every tree, yielding between chunks of work (see `PathTree.sealSteps`). */
  *sealSteps(): Generator<void, void, void> {
    for (const tree of this.exactHosts.values()) yield* tree.sealSteps();
    for (const tree of this.wildcardHosts.values()) yield* tree.sealSteps();
    if (this.anyHost !== null) yield* this.anyHost.sealSteps();
  }

  /**
   * Returns the route's methods deduplicated and sorted, in a list the trees may keep;
   * empty means any method.
   */
  #methodsOf(route: RouterRoute<T>): readonly string[] {
    const methods = uniqueMethods(route);
    if (methods.length !== 1) return methods;

    let shared = this.#singleMethods.get(methods[0]);
    if (shared === undefined) {
      shared = Object.freeze([methods[0]]);
      this.#singleMethods.set(methods[0], shared);
    }
    return shared;
  }

  /** Returns the trees a route belongs to, each once, creating them on first use. */
  #treesFor(route: RouterRoute<T>): PathTree<T>[] {
    if (route.hosts.length === 0) {
      this.anyHost ??= new PathTree('any host');
      return (this.#anyHostTrees ??= [this.anyHost]);
    }

    const trees: PathTree<T>[] = [];
    for (const raw of route.hosts) {
      const host = parseHostPattern(route.name, raw);
      const [index, key, label] =
        host.kind === 'exact'
          ? [this.exactHosts, host.name, host.name]
          : [this.wildcardHosts, host.suffix, '*.' + host.suffix];
      let tree = index.get(key);
      if (tree === undefined) {
        tree = new PathTree(`host ${JSON.stringify(label)}`);
        index.set(key, tree);
      }
      if (!trees.includes(tree)) trees.push(tree);
    }
    return trees;
  }

  /** Returns one shared names list and params readers per distinct list of names. */
  #namesOf(names: readonly string[]): NamesInfo {
    // Names never contain "/", so the joined key is unambiguous. Most patterns have one name
    // or none, which need no joined string.
    const key = names.length === 1 ? names[0] : names.join('/');
    let info = this.#namesByKey.get(key);
    if (info === undefined) {
      // A copy of the exact length: the parsed list may have room to spare.
      const shared = names.slice();
      let parent: ParamsReader | undefined;
      info = {
        names: shared,
        reader: compileParamsReader(shared, false),
        parentReader: () => (parent ??= compileParamsReader(shared, true)),
      };
      this.#namesByKey.set(key, info);
    }
    return info;
  }
}

/** A list of param names shared by routes, with the params readers compiled for it. */
interface NamesInfo {
  names: readonly string[];
  reader: ParamsReader;
  /** The reader for the parent path of a `**` pattern, compiled on first use. */
  parentReader: () => ParamsReader;
}

/** Returns the route's methods deduplicated and sorted; empty means any method. */
function uniqueMethods(route: RouterRoute<unknown>): readonly string[] {
  if (route.methods.includes('')) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(route.name)} has an empty method; leave methods empty to match any method`,
    );
  }
  if (route.methods.length <= 1) return route.methods;
  return [...new Set(route.methods)].sort(compareStrings);
}

/** Parses a route's paths, keeping one of each: the same path in any spelling is one path. */
function uniquePatterns(routeName: string, paths: readonly string[]): PathPattern[] {
  const patterns = new Map<string, PathPattern>();
  for (const source of paths) {
    const pattern = parsePattern(routeName, source);
    if (!patterns.has(pattern.key)) patterns.set(pattern.key, pattern);
  }
  return [...patterns.values()];
}

/** Orders strings by UTF-16 code units, like the default `sort`. */
export function compareStrings(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}
