import { matchMixedSegment, type MixedSegment } from './mixed-segment.js';
import { normalizeRequestPath } from './path.js';
import {
  addStaticLength,
  addToSlot,
  appendCopy,
  ASCII_LIMIT,
  createSlot,
  EMPTY_EDGE,
  hasStaticLength,
  LINEAR_SCAN_LIMIT,
  NO_TEXTS,
  PARAM_ONLY,
  PathNode,
  sealNode,
  segmentHash,
  SLASH,
  STATIC_LENGTH_WORDS,
  STATIC_ONLY,
  staticPathOf,
  tableSlot,
  type Slot,
} from './path-node.js';
import type { PathPattern } from './pattern.js';
import type { RouteEntry, SearchState } from './route-entry.js';
import { TreeEditor, type StaticChanges } from './tree-editor.js';

export type { Slot };

/** Nodes sealed between two yields of `sealSteps`. */
const SEAL_STEP_NODES = 256;
/**
 * Static paths that edits may change before a sealed fork folds its changes into a new map
 * of static paths. Each fork copies its base's changes, so this bounds that copy.
 */
const STATIC_CHANGES_LIMIT = 512;
/** Static paths copied between two yields while folding changes. */
const FOLD_STEP_PATHS = 4096;

/**
 * The routes of one host (or of any host) as a tree of path segments. At each
 * segment a static child is tried first, then the mixed children in
 * precedence order, then the param child, then the catch-all. A branch that
 * fails further down (on the path or on the method) backtracks to the next.
 * The first route found is therefore the best by the documented precedence,
 * whatever order routes were added in.
 */
export class PathTree<T> {
  readonly #hostLabel: string;
  #root: PathNode<T>;
  /** Edge index by text of each wide node while building (see `staticChild`). */
  readonly #wideIndexes = new Map<PathNode<T>, Map<string, number>>();
  /**
   * Fully static patterns by normalized path, checked before the tree walk.
   * It is a null-prototype object rather than a Map, because V8 stores object
   * keys internalized while a Map keeps the caller's strings. On Node 20, a Map
   * lookup that compared a sliced string key took 50 ns against 8 ns for a flat one.
   */
  #staticPaths: Record<string, Slot<T> | undefined>;
  /**
   * Static slots that edits changed since `#staticPaths` was filled, read before it; null on
   * a tree that no edit changed. Copying all of `#staticPaths` for a one-route change would
   * cost as much as a build.
   */
  #staticChanges: StaticChanges<T> | null;
  /**
   * Lengths of the paths in `#staticPaths` and `#staticChanges` (see `hasStaticLength`). A
   * removed path keeps its length in the set, which only costs a lookup that misses.
   */
  readonly #staticLengths: Int32Array;
  /** The editor of a tree made by `fork`, until it is sealed. */
  #editor: TreeEditor<T> | null = null;
  /**
   * Paths of routes in the tree: one per `insert`, less one per `remove`. A removal can leave
   * an empty wide node behind its parent's edge, so the nodes alone do not show whether it is empty.
   */
  #paths = 0;

  /**
   * Creates an empty tree, or with `base` a fork of a sealed tree: it shares the base's nodes,
   * and `insert` and `remove` copy the nodes they change (see `TreeEditor`). `hostLabel`
   * names the host in conflict messages, such as `host "a.com"` or `any host`.
   */
  constructor(hostLabel: string, base?: PathTree<T>) {
    this.#hostLabel = hostLabel;
    if (base === undefined) {
      this.#root = new PathNode();
      this.#staticPaths = Object.create(null) as Record<string, Slot<T> | undefined>;
      this.#staticChanges = null;
      this.#staticLengths = new Int32Array(STATIC_LENGTH_WORDS);
      return;
    }
    this.#paths = base.#paths;
    this.#staticPaths = base.#staticPaths;
    this.#staticLengths = base.#staticLengths.slice();
    // Each fork gets its own copy, so the base tree keeps serving with its own changes.
    this.#staticChanges = Object.assign(
      Object.create(null),
      base.#staticChanges,
    ) as StaticChanges<T>;
    this.#editor = new TreeEditor(base.#root, this.#staticChanges, hostLabel);
    this.#root = this.#editor.root;
  }

  /** Returns a tree that starts as a copy of this sealed one and can be changed (see the constructor). */
  fork(): PathTree<T> {
    return new PathTree(this.#hostLabel, this);
  }

  /** Returns whether the tree has no routes. */
  isEmpty(): boolean {
    return this.#paths === 0;
  }

  /**
   * Removes one path of one route from a fork. `methods` are the route's methods as `insert`
   * was given them.
   *
   * @throws MissingRouteError when the tree has no entry of `route` at `pattern`.
   */
  remove(pattern: PathPattern, route: string, methods: readonly string[]): void {
    if (this.#editor === null) throw new Error('PathTree.remove needs a fork that is not sealed');
    this.#editor.remove(pattern, route, methods);
    this.#paths--;
  }

  /**
   * Adds one path of one route. `methods` must be deduplicated and sorted;
   * empty means any method. `parentEntry` is required for a `**` pattern: it
   * is the entry for the path without the catch-all segment.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when a route already in the tree
   *   has the same pattern (up to param names) and an overlapping method.
   */
  insert(
    pattern: PathPattern,
    methods: readonly string[],
    entry: RouteEntry<T>,
    parentEntry?: RouteEntry<T>,
  ): void {
    if (this.#editor !== null) {
      this.#editor.insert(pattern, methods, entry, parentEntry);
      this.#paths++;
      return;
    }
    let node = this.#root;
    const segments = pattern.segments;
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i];
      if (segment.kind === 'static') node = staticChild(node, segment.text, this.#wideIndexes);
      else if (segment.kind === 'param') node = node.param ??= new PathNode();
      else if (segment.kind === 'mixed') node = mixedChild(node, segment.mixed);
      else {
        // At the root, `/**` has no parent path: `/` is already in the catch-all.
        if (segment.includesParent && i > 0) {
          this.#addEnd(node, staticPathOf(segments, i), methods, parentEntry as RouteEntry<T>);
        }
        node.catchAll ??= createSlot();
        addToSlot(node.catchAll, methods, entry, this.#hostLabel);
        this.#paths++;
        return;
      }
    }
    let staticPath: string | null = null;
    if (pattern.isStatic) {
      // Without escapes and `::`, the normalized path is the pattern itself.
      const plain = pattern.source.indexOf('%') === -1 && pattern.source.indexOf(':') === -1;
      staticPath = plain ? pattern.source : staticPathOf(segments, segments.length);
    }
    this.#addEnd(node, staticPath, methods, entry);
    this.#paths++;
  }

  /**
   * Prepares the tree for lookups, yielding after every few hundred nodes so
   * that a caller can spread the work over several turns of the event loop.
   * The tree serves lookups only after the generator has finished.
   */
  *sealSteps(): Generator<void, void, void> {
    const editor = this.#editor;
    if (editor !== null) {
      yield* editor.sealSteps();
      this.#root = editor.root;
      this.#editor = null;
      // The editor wrote every static path it added to the changes, which hold at most a few
      // hundred paths before `#foldStaticChanges` folds them.
      for (const path in this.#staticChanges) addStaticLength(this.#staticLengths, path.length);
      yield* this.#foldStaticChanges();
      return;
    }
    const pending: PathNode<T>[] = [this.#root];
    let sealed = 0;
    while (pending.length > 0) {
      sealNode(pending.pop() as PathNode<T>, pending);
      if (++sealed % SEAL_STEP_NODES === 0) yield;
    }
    this.#wideIndexes.clear();
  }

  /**
   * Folds `#staticChanges` into a new `#staticPaths` when edits have changed more than
   * `STATIC_CHANGES_LIMIT` paths, so the changes a fork copies stay small, and drops an empty
   * set of changes. Yields after every few thousand paths. The tree serves neither object
   * until sealing ends.
   */
  *#foldStaticChanges(): Generator<void, void, void> {
    const changes = this.#staticChanges;
    if (changes === null) return;
    const changed = Object.keys(changes);
    if (changed.length === 0) {
      // Lookups then skip the extra read of an empty object.
      this.#staticChanges = null;
      return;
    }
    if (changed.length <= STATIC_CHANGES_LIMIT) return;

    const paths = Object.create(null) as Record<string, Slot<T> | undefined>;
    let copied = 0;
    for (const path in this.#staticPaths) {
      if (changes[path] === undefined) paths[path] = this.#staticPaths[path];
      if (++copied % FOLD_STEP_PATHS === 0) yield;
    }
    for (const path of changed) {
      const slot = changes[path];
      if (slot !== null && slot !== undefined) paths[path] = slot;
    }
    this.#staticPaths = paths;
    this.#staticChanges = null;
  }

  /** Seals the tree in one go, as `sealSteps` does in steps. */
  seal(): void {
    const steps = this.sealSteps();
    while (steps.next().done !== true);
  }

  /**
   * Returns the route for a normalized path and a method, or null. On a
   * match, `state.bounds` contains where each param starts and ends in the path.
   * Sets `state.pathMatched` when some route matched the path but not the method.
   */
  find(method: string, path: string, state: SearchState): RouteEntry<T> | null {
    // A fully static pattern is the best match a path can have, so a hit here
    // is what the tree walk would return. A method miss falls through to the
    // walk, which may find a param route for the method.
    const slot = this.staticSlot(path);
    if (slot !== undefined) {
      const entry = methodEntry(slot, method, state);
      if (entry !== null) return entry;
    }
    return searchNode(this.#root, method, path, 1, 0, state);
  }

  /**
   * Returns the route of a fully static pattern for a raw request path that is
   * already in normalized form, or null. A hit is what `find` returns for the
   * same path, so a caller may skip normalizing it.
   */
  findStatic(method: string, rawPath: string): RouteEntry<T> | null {
    const slot = this.staticSlot(rawPath);
    if (slot === undefined || !slot.requestForm) return null;
    return slotEntry(slot, method);
  }

  /** Returns the slot of a fully static pattern by its normalized path. */
  staticSlot(path: string): Slot<T> | undefined {
    if (!hasStaticLength(this.#staticLengths, path.length)) return undefined;
    const changes = this.#staticChanges;
    if (changes !== null) {
      const changed = changes[path];
      if (changed !== undefined) return changed ?? undefined;
    }
    return this.#staticPaths[path];
  }

  /**
   * Slots of fully static patterns by normalized path, which the router reads on its fast
   * path. Slots in `staticChanges` take precedence.
   */
  get staticSlots(): Readonly<Record<string, Slot<T> | undefined>> {
    return this.#staticPaths;
  }

  /** Lengths of the static paths, a superset after edits (see `hasStaticLength`). */
  get staticLengths(): Int32Array {
    return this.#staticLengths;
  }

  /** Static slots changed by edits (see `#staticChanges`), or null. */
  get staticChanges(): Readonly<StaticChanges<T>> | null {
    return this.#staticChanges;
  }

  /**
   * Same as `find` without the static-path shortcut, for a caller that already
   * tried `findStatic` with the same path; tests compare the two.
   */
  search(method: string, path: string, state: SearchState): RouteEntry<T> | null {
    return searchNode(this.#root, method, path, 1, 0, state);
  }

  /**
   * Adds to `allow` the methods of every route that matches a normalized path.
   * Only called when `find` returned null for every host class, so every
   * matching route has a method list.
   */
  collectMethods(path: string, allow: Set<string>): void {
    collectNode(this.#root, path, 1, allow);
  }

  #addEnd(
    node: PathNode<T>,
    staticPath: string | null,
    methods: readonly string[],
    entry: RouteEntry<T>,
  ): void {
    node.end ??= createSlot();
    addToSlot(node.end, methods, entry, this.#hostLabel);
    if (staticPath !== null && this.#staticPaths[staticPath] === undefined) {
      node.end.requestForm = normalizeRequestPath(staticPath) === staticPath;
      this.#staticPaths[staticPath] = node.end;
      addStaticLength(this.#staticLengths, staticPath.length);
    }
  }
}

// The lookup functions below (`searchNode`, `findEdge`, `findWideEdge` and `edgeMatches`) write
// the constants they import from path-node.ts as literals, each named in a comment. In optimized
// code on Node 20, every read of an imported binding loads it from its module cell again. This
// check keeps the literals equal to the constants.
if (
  STATIC_ONLY !== 0 ||
  PARAM_ONLY !== 1 ||
  LINEAR_SCAN_LIMIT !== 8 ||
  EMPTY_EDGE !== -1 ||
  SLASH !== 0x2f ||
  ASCII_LIMIT !== 128
) {
  throw new Error(
    'a constant of path-node.ts differs from its literal in the lookup functions of ' +
      'path-tree.ts; update the literal',
  );
}

/**
 * Walks the tree from `node` for the segment that starts at `start`. The walk
 * visits each node at most once, because the path and the edges above a node
 * fix where its segment starts. The work of a lookup is therefore bounded by
 * the number of nodes times the path length, with no regular expression.
 */
function searchNode<T>(
  node: PathNode<T>,
  method: string,
  path: string,
  start: number,
  captured: number,
  state: SearchState,
): RouteEntry<T> | null {
  // A node with one kind of child has nothing to backtrack to, so the walk goes down
  // through such nodes in this loop instead of recursing.
  for (;;) {
    const dispatch = node.dispatch;
    if (dispatch === 0 /* STATIC_ONLY */) {
      const index = findEdge(node, path, start);
      if (index === -1) return null;
      const after = start + node.edgeTexts[index].length;
      node = node.edgeNodes[index];
      if (after === path.length) return methodEntry(node.end, method, state);
      start = after + 1;
    } else if (dispatch === 1 /* PARAM_ONLY */) {
      let end = path.indexOf('/', start);
      if (end === -1) end = path.length;
      // A param never matches an empty segment.
      if (end === start) return null;
      state.bounds[2 * captured] = start;
      state.bounds[2 * captured + 1] = end;
      node = node.param as PathNode<T>;
      if (end === path.length) return methodEntry(node.end, method, state);
      start = end + 1;
      captured++;
    } else {
      return searchBranches(node, method, path, start, captured, state);
    }
  }
}

/** Tries every kind of child of a node in precedence order, backtracking on a failure. */
function searchBranches<T>(
  node: PathNode<T>,
  method: string,
  path: string,
  start: number,
  captured: number,
  state: SearchState,
): RouteEntry<T> | null {
  const index = findEdge(node, path, start);
  if (index !== -1) {
    const child = node.edgeNodes[index];
    const after = start + node.edgeTexts[index].length;
    const entry =
      after === path.length
        ? methodEntry(child.end, method, state)
        : searchNode(child, method, path, after + 1, captured, state);
    if (entry !== null) return entry;
  }

  const mixed = node.mixed;
  const param = node.param;
  if (mixed !== null || param !== null) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;

    if (mixed !== null) {
      for (let i = 0; i < mixed.length; i++) {
        const { segment, node: child } = mixed[i];
        if (!matchMixedSegment(segment, path, start, end, state.bounds, captured)) continue;
        const entry =
          end === path.length
            ? methodEntry(child.end, method, state)
            : searchNode(child, method, path, end + 1, captured + segment.names.length, state);
        if (entry !== null) return entry;
      }
    }

    // A param never matches an empty segment.
    if (param !== null && end > start) {
      // Recording bounds in a preallocated array is cheaper than collecting
      // params while backtracking. A failed branch is overwritten by the next.
      state.bounds[2 * captured] = start;
      state.bounds[2 * captured + 1] = end;
      const entry =
        end === path.length
          ? methodEntry(param.end, method, state)
          : searchNode(param, method, path, end + 1, captured + 1, state);
      if (entry !== null) return entry;
    }
  }

  // The catch-all takes the rest of the path from `start`, which may be empty.
  const catchAll = node.catchAll;
  if (catchAll === null) return null;
  state.bounds[2 * captured] = start;
  state.bounds[2 * captured + 1] = path.length;
  return methodEntry(catchAll, method, state);
}

/** Visits every branch that `searchNode` could take, collecting the methods of each match. */
function collectNode<T>(node: PathNode<T>, path: string, start: number, allow: Set<string>): void {
  const index = findEdge(node, path, start);
  if (index !== -1) {
    const child = node.edgeNodes[index];
    const after = start + node.edgeTexts[index].length;
    if (after === path.length) addMethods(child.end, allow);
    else collectNode(child, path, after + 1, allow);
  }

  let end = path.indexOf('/', start);
  if (end === -1) end = path.length;
  for (const { segment, node: child } of node.mixed ?? []) {
    if (!matchMixedSegment(segment, path, start, end, null, 0)) continue;
    if (end === path.length) addMethods(child.end, allow);
    else collectNode(child, path, end + 1, allow);
  }
  if (node.param !== null && end > start) {
    if (end === path.length) addMethods(node.param.end, allow);
    else collectNode(node.param, path, end + 1, allow);
  }

  addMethods(node.catchAll, allow);
}

/** Returns the index of the edge that matches the path at `start`, or -1. At most one can match. */
function findEdge<T>(node: PathNode<T>, path: string, start: number): number {
  const texts = node.edgeTexts;
  // Sealing gives buckets or a table to every node with more edges than this, and only to
  // those, so a narrow node reads neither.
  if (texts.length > 8 /* LINEAR_SCAN_LIMIT */) return findWideEdge(node, path, start);

  // Comparing first characters from a small integer array skips most edges
  // without touching their strings.
  const first = path.charCodeAt(start);
  const codes = node.edgeFirstCodes;
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    // -1 is `EMPTY_EDGE`.
    if ((code === first || code === -1) && edgeMatches(texts[i], path, start)) return i;
  }
  return -1;
}

/** Finds the edge of a node with more than `LINEAR_SCAN_LIMIT` edges (see `findEdge`). */
function findWideEdge<T>(node: PathNode<T>, path: string, start: number): number {
  const texts = node.edgeTexts;
  const buckets = node.edgeBuckets;
  if (buckets !== null) {
    // An empty edge matches an empty segment, which starts with "/" or ends the path.
    const first = path.charCodeAt(start);
    const code = first === 0x2f /* SLASH */ || first !== first ? 0 : first;
    if (code >= 128 /* ASCII_LIMIT */) return -1;
    for (let i = buckets[code]; i < buckets[code + 1]; i++) {
      if (edgeMatches(texts[i], path, start)) return i;
    }
    return -1;
  }
  const table = node.edgeTable as Int32Array;
  const hashes = node.edgeHashes as Int32Array;
  const hash = segmentHash(path, start);
  const mask = table.length - 1;
  // Probing stops at an empty slot. Edges never share a first segment, so an edge whose
  // hash matches but whose text does not is another segment with the same hash.
  for (
    let slot = tableSlot(hash, node.edgeTableShift);
    table[slot] !== 0;
    slot = (slot + 1) & mask
  ) {
    const index = table[slot] - 1;
    if (hashes[index] === hash && edgeMatches(texts[index], path, start)) return index;
  }
  return -1;
}

/** Length of the path after a long edge above which `edgeMatches` bounds its search. */
const LONG_TAIL = 64;

/**
 * Returns whether `text` is the whole of one or more segments of `path` from `start`. The
 * caller has matched its first character or the hash of its first segment.
 */
function edgeMatches(text: string, path: string, start: number): boolean {
  const after = start + text.length;
  if (after > path.length) return false;
  if (after < path.length && path.charCodeAt(after) !== 0x2f /* SLASH */) return false;
  if (text.length === 0) return true;

  // In a micro-benchmark on Node 20, startsWith with a position cost about 4 ns
  // per character. Slicing was fastest for texts that V8 copies (under 13
  // characters), and indexOf for longer ones (40 ns against 170 ns at 36).
  if (text.length < 13) return path.slice(start, after) === text;
  // On a mismatch indexOf searches on to the end of the path, so a long tail is cut off first.
  // An 8,000-character path that repeated the edge with one letter changed took 3.2 µs to look
  // up without the cut and 0.5 µs with it (Node 20).
  const haystack = path.length - after > LONG_TAIL ? path.slice(0, after) : path;
  return haystack.indexOf(text, start) === start;
}

/** Returns the route of a slot for a method, noting in `state` a slot without it. */
function methodEntry<T>(
  slot: Slot<T> | null,
  method: string,
  state: SearchState,
): RouteEntry<T> | null {
  if (slot === null) return null;
  const entry = slotEntry(slot, method);
  if (entry === null) state.pathMatched = true;
  return entry;
}

/** Returns the route of a slot for a method, or null. */
export function slotEntry<T>(slot: Slot<T>, method: string): RouteEntry<T> | null {
  if (slot.any !== null) return slot.any;
  const methods = slot.methods;
  for (let i = 0; i < methods.length; i++) {
    if (methods[i] === method) return slot.entries[i];
  }
  // A GET route also matches HEAD when no route at the same place lists HEAD,
  // which the loop above would have found.
  if (method === 'HEAD') {
    const get = methods.indexOf('GET');
    if (get !== -1) return slot.entries[get];
  }
  return null;
}

function addMethods(slot: Slot<unknown> | null, allow: Set<string>): void {
  if (slot === null) return;
  for (const method of slot.methods) allow.add(method);
}

/**
 * Returns the child of `node` on the static edge `text`, adding it if needed. `wideIndexes`
 * contains the edge index by text of each node with more than `LINEAR_SCAN_LIMIT` edges. It
 * lives beside the tree rather than in a field of every node, and sealing drops it.
 */
function staticChild<T>(
  node: PathNode<T>,
  text: string,
  wideIndexes: Map<PathNode<T>, Map<string, number>>,
): PathNode<T> {
  const texts = node.edgeTexts;
  // Only a node with more than `LINEAR_SCAN_LIMIT` edges has an index, so a narrow node skips
  // the Map lookup.
  const wide = texts.length > LINEAR_SCAN_LIMIT ? wideIndexes.get(node) : undefined;
  const index = wide === undefined ? texts.indexOf(text) : (wide.get(text) ?? -1);
  if (index !== -1) return node.edgeNodes[index];

  const child = new PathNode<T>();
  if (texts === NO_TEXTS) {
    // Literals of one element: most nodes keep a single edge.
    node.edgeTexts = [text];
    node.edgeNodes = [child];
  } else if (texts.length < LINEAR_SCAN_LIMIT) {
    // Exact-length copies while a node is narrow: the first push would reserve 16 more slots,
    // which every scavenge during the build copies.
    node.edgeTexts = appendCopy(texts, text);
    node.edgeNodes = appendCopy(node.edgeNodes, child);
  } else {
    node.edgeTexts.push(text);
    node.edgeNodes.push(child);
  }
  const count = node.edgeTexts.length;
  if (wide !== undefined) {
    wide.set(text, count - 1);
  } else if (count > LINEAR_SCAN_LIMIT) {
    wideIndexes.set(node, new Map(node.edgeTexts.map((edge, i) => [edge, i])));
  }
  return child;
}

function mixedChild<T>(node: PathNode<T>, segment: MixedSegment): PathNode<T> {
  node.mixed ??= [];
  const known = node.mixed.find((edge) => edge.segment.shape === segment.shape);
  if (known !== undefined) return known.node;
  const edge = { segment, node: new PathNode<T>() };
  node.mixed.push(edge);
  return edge.node;
}
