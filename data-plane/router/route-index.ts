import { LoomError } from '../../common/errors.js';
import { parseHostPattern } from './host.js';
import { PathTree } from './path-tree.js';
import { parsePattern, type PathPattern } from './pattern.js';
import {
  cachedParamsReader,
  compileParamsReaders,
  createRouteEntry,
  SearchState,
  type ParamsReader,
  type RouteEntry,
} from './route-entry.js';
import type { RouterRoute } from './types.js';

/**
 * The path trees of a route set, one per host class: a Map of exact hosts, a
 * Map of wildcard suffixes (`example.com` for `*.example.com`) and one tree
 * for routes without hosts. Filled by `add`, then sealed once.
 */
export class RouteIndex<T> {
  readonly exactHosts: Map<string, PathTree<T>>;
  readonly wildcardHosts: Map<string, PathTree<T>>;
  anyHost: PathTree<T> | null;
  /** Sized for the pattern with the most params. */
  readonly state: SearchState;
  /** One shared list per single method, so that most routes add no array of their own. */
  readonly #singleMethods: Map<string, readonly string[]>;
  /** The one-tree list of every route without hosts. */
  #anyHostTrees: PathTree<T>[] | null = null;
  /** Trees that `add` or `remove` changed since the index was created, which `sealSteps` seals. */
  readonly #changed = new Set<PathTree<T>>();
  /**
   * Entries added without a compiled params reader, and the names info of each, which
   * `sealSteps` compiles in one go (see `compileParamsReaders`).
   */
  readonly #unreadEntries: RouteEntry<T>[] = [];
  readonly #unreadInfos: NamesInfo[] = [];

  /**
   * Creates an empty index, or with `base` a fork of a sealed one. A fork serves the same
   * routes until `add` and `remove` change them. They fork each tree they change instead of
   * writing to it, so `base` keeps serving unchanged.
   */
  constructor(base?: RouteIndex<T>) {
    this.exactHosts = new Map(base?.exactHosts);
    this.wildcardHosts = new Map(base?.wildcardHosts);
    this.anyHost = base?.anyHost ?? null;
    this.state = base?.state ?? new SearchState();
    this.#singleMethods = base === undefined ? new Map() : base.#singleMethods;
  }

  /**
   * Removes every path of a route from a fork, by the route's name and methods, so a route of
   * the same name with other methods keeps its entries. The route must be the one the base
   * index was given, with the same hosts, paths and methods.
   *
   * @throws MissingRouteError when a path of the route is not in its trees.
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on an invalid host or path pattern.
   */
  remove(route: RouterRoute<T>): void {
    const methods = this.#methodsOf(route);
    const trees = this.#treesFor(route);
    for (const pattern of patternsOf(route)) {
      for (const tree of trees) tree.remove(pattern, route.name, methods);
    }
  }

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
    for (const pattern of patternsOf(route)) {
      const info = namesInfoOf(pattern.names);
      const names = info.names;
      this.state.reserve(names.length);
      const entry = createRouteEntry(
        route.name,
        route.value,
        pattern,
        names,
        false,
        info.reader ?? UNCOMPILED_READER,
      );
      if (info.reader === null) this.#deferReader(entry, info);
      const last = pattern.segments[pattern.segments.length - 1];
      let parentEntry: RouteEntry<T> | undefined;
      if (last.kind === 'catch-all' && last.includesParent) {
        info.parentReader ??= cachedParamsReader(names, true) ?? null;
        const reader = info.parentReader ?? UNCOMPILED_READER;
        parentEntry = createRouteEntry(route.name, route.value, pattern, names, true, reader);
        if (info.parentReader === null) this.#deferReader(parentEntry, info);
      }
      for (const tree of trees) tree.insert(pattern, methods, entry, parentEntry);
    }
  }

  /**
   * Seals every tree that `add` or `remove` changed, yielding between chunks of work (see
   * `PathTree.sealSteps`), and drops the trees left without routes.
   */
  *sealSteps(): Generator<void, void, void> {
    this.#compileReaders();
    for (const tree of this.#changed) yield* tree.sealSteps();
    for (const tree of this.#changed) {
      if (!tree.isEmpty()) continue;
      deleteValue(this.exactHosts, tree);
      deleteValue(this.wildcardHosts, tree);
      if (this.anyHost === tree) this.anyHost = null;
    }
    this.#changed.clear();
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

  /**
   * Returns the trees a route belongs to, each once, creating them on first use. A tree of
   * the base index is forked first.
   */
  #treesFor(route: RouterRoute<T>): PathTree<T>[] {
    if (route.hosts.length === 0) {
      if (this.#anyHostTrees === null) {
        this.anyHost = this.#changedTree(this.anyHost, 'any host');
        this.#anyHostTrees = [this.anyHost];
      }
      return this.#anyHostTrees;
    }

    const trees: PathTree<T>[] = [];
    for (const raw of route.hosts) {
      const host = parseHostPattern(route.name, raw);
      const [index, key, label] =
        host.kind === 'exact'
          ? [this.exactHosts, host.name, host.name]
          : [this.wildcardHosts, host.suffix, '*.' + host.suffix];
      const known = index.get(key);
      const tree = this.#changedTree(known ?? null, `host ${JSON.stringify(label)}`);
      if (tree !== known) index.set(key, tree);
      if (!trees.includes(tree)) trees.push(tree);
    }
    return trees;
  }

  #deferReader(entry: RouteEntry<T>, info: NamesInfo): void {
    this.#unreadEntries.push(entry);
    this.#unreadInfos.push(info);
  }

  /**
   * Compiles the params readers that added entries lack, one `new Function` call for the
   * readers of whole paths and one for the parent paths of `**` patterns, and sets them.
   */
  #compileReaders(): void {
    const entries = this.#unreadEntries;
    if (entries.length === 0) return;
    const infos = this.#unreadInfos;
    for (const emptyCatchAll of [false, true]) {
      const missing = new Set<NamesInfo>();
      for (let i = 0; i < entries.length; i++) {
        const info = infos[i];
        if (entries[i].emptyCatchAll !== emptyCatchAll) continue;
        // Another build may have compiled it since.
        const known = emptyCatchAll ? info.parentReader : info.reader;
        if (known === null) missing.add(info);
      }
      if (missing.size === 0) continue;
      const lists = [...missing];
      const readers = compileParamsReaders(
        lists.map((info) => info.names),
        emptyCatchAll,
      );
      for (let i = 0; i < lists.length; i++) {
        if (emptyCatchAll) lists[i].parentReader = readers[i];
        else lists[i].reader = readers[i];
      }
    }
    for (let i = 0; i < entries.length; i++) {
      const info = infos[i];
      entries[i].readParams = (
        entries[i].emptyCatchAll ? info.parentReader : info.reader
      ) as ParamsReader;
    }
    entries.length = 0;
    infos.length = 0;
  }

  /** Returns `tree` when this index already changed it, else a fork of it or a new tree. */
  #changedTree(tree: PathTree<T> | null, hostLabel: string): PathTree<T> {
    if (tree !== null && this.#changed.has(tree)) return tree;
    const changed = tree === null ? new PathTree<T>(hostLabel) : tree.fork();
    this.#changed.add(changed);
    return changed;
  }
}

/**
 * Shared names lists and params readers by param names, for every router in the process. Most
 * routes repeat a few lists, and every build of a table would otherwise copy each list and look
 * up its readers again.
 */
const namesInfoByKey = new Map<string, NamesInfo>();
/** Maximum size of `namesInfoByKey`, so that ever new param names cannot grow it forever. */
const MAX_CACHED_NAMES = 4096;

/** A list of param names shared by routes, with the params readers compiled for it. */
interface NamesInfo {
  names: readonly string[];
  /** The reader of `names`, or null until a `RouteIndex` compiles it when sealing. */
  reader: ParamsReader | null;
  /** The reader for the parent path of a `**` pattern, or null until it is compiled. */
  parentReader: ParamsReader | null;
}

/** The entry `namesInfoOf` returned last. */
let lastNamesInfo: NamesInfo = { names: [], reader: null, parentReader: null };
namesInfoByKey.set('', lastNamesInfo);

/** Placeholder params reader of an entry until sealing sets the compiled one; never called. */
const UNCOMPILED_READER: ParamsReader = () => {
  throw new Error('the params reader of a route entry is compiled when its index is sealed');
};

/** Returns one shared names list and params readers per distinct list of names. */
function namesInfoOf(names: readonly string[]): NamesInfo {
  // Routes next to each other in a table often have the same names, which this compares
  // without building a key.
  if (sameNames(lastNamesInfo.names, names)) return lastNamesInfo;
  // Names never contain "/", so the joined key is unambiguous. Most patterns have one name
  // or none, which need no joined string.
  let key = '';
  if (names.length === 1) key = names[0];
  else if (names.length > 1) key = names.join('/');
  let info = namesInfoByKey.get(key);
  if (info === undefined) {
    // A copy of the exact length: the parsed list may have room to spare.
    const shared = names.slice();
    info = { names: shared, reader: cachedParamsReader(shared, false) ?? null, parentReader: null };
    if (namesInfoByKey.size < MAX_CACHED_NAMES) namesInfoByKey.set(key, info);
  }
  lastNamesInfo = info;
  return info;
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
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

/** Parses a route's paths, keeping one of each (see `uniquePatterns`). */
function patternsOf(route: RouterRoute<unknown>): PathPattern[] {
  // Most routes list one path, which needs no deduplication.
  if (route.paths.length === 1) return [parsePattern(route.name, route.paths[0])];
  return uniquePatterns(route.name, route.paths);
}

/** Deletes every key whose value is `value`. */
function deleteValue<K, V>(map: Map<K, V>, value: V): void {
  for (const [key, item] of map) {
    if (item === value) map.delete(key);
  }
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
