import { LoomError } from '../../common/errors.js';
import { compareMixedSegments, matchMixedSegment, type MixedSegment } from './mixed-segment.js';
import { normalizeRequestPath } from './path.js';
import type { PathPattern, PatternSegment } from './pattern.js';
import type { RouteEntry, SearchState } from './route-entry.js';

/**
 * Routes that end at one place in the tree. At most one matches any method.
 * `methods` and `entries` are parallel: a route list is short, and scanning
 * it measured faster than a Map lookup and takes less memory.
 */
export interface Slot<T> {
  any: RouteEntry<T> | null;
  methods: readonly string[];
  entries: RouteEntry<T>[];
  /**
   * True on the slot of a fully static path that `normalizeRequestPath` returns
   * unchanged, so a raw request path equal to it can skip normalization.
   */
  requestForm: boolean;
}

/** A mixed segment and the node it leads to. */
interface MixedEdge<T> {
  segment: MixedSegment;
  node: PathNode<T>;
}

/** Lookup dispatch of a node with static edges only (or no children). */
const STATIC_ONLY = 0;
/** Lookup dispatch of a node whose only child is a param. */
const PARAM_ONLY = 1;
/** Lookup dispatch of any other node, and of every node before sealing. */
const BRANCHES = 2;

const NO_TEXTS: string[] = [];
const NO_NODES: PathNode<never>[] = [];
const NO_ENTRIES: RouteEntry<never>[] = [];
const NO_CODES: number[] = [];
/** First-character code of an empty edge text, which matches an empty segment. */
const EMPTY_EDGE = -1;

class PathNode<T> {
  // Static children are edges in parallel arrays. While building, each edge
  // text is one segment. Sealing merges a chain of nodes that have nothing but
  // one static child into one edge whose text is the segments joined by "/",
  // so `/api/v1/users` costs one comparison instead of three.
  edgeTexts: string[] = NO_TEXTS;
  edgeNodes: PathNode<T>[] = NO_NODES;
  /** First character of each edge text after sealing, `EMPTY_EDGE` for an empty text. */
  edgeFirstCodes: number[] = NO_CODES;
  /**
   * On a node with too many edges to scan, edges sorted by first character
   * and, for each character code below 128, where its edges start: the edges
   * of code `c` are `edgeBuckets[c]` up to `edgeBuckets[c + 1]`. Empty edge
   * texts sit under code 0.
   */
  edgeBuckets: Int32Array | null = null;
  /**
   * Open-addressing table of edge index + 1 (0 is empty) by `segmentHash` of
   * the edge's first segment, on a node where one first character starts too
   * many edges for buckets. Hashing the request segment in place creates no
   * string, which a Map lookup needed.
   */
  edgeTable: Int32Array | null = null;
  /** `segmentHash` of each edge's first segment, beside `edgeTable`. */
  edgeHashes: Int32Array | null = null;
  /** 32 minus log2 of the `edgeTable` size, for `tableSlot`. */
  edgeTableShift = 32;
  /** Mixed children; sorted into the order they are tried when sealing. */
  mixed: MixedEdge<T>[] | null = null;
  param: PathNode<T> | null = null;
  /** Routes whose pattern ends at this node. */
  end: Slot<T> | null = null;
  /** Routes whose pattern ends with a catch-all right after this node. */
  catchAll: Slot<T> | null = null;
  /**
   * Lookup dispatch by the kinds of child, set when sealing: `STATIC_ONLY`, `PARAM_ONLY` or
   * `BRANCHES`.
   */
  dispatch = BRANCHES;
}

const SLASH = 0x2f;
/** Pattern text is ASCII, so no edge starts with a character code at or above this. */
const ASCII_LIMIT = 128;

/**
 * Edges beyond which a node looks the first segment up instead of scanning: in a Map while
 * building, in buckets or a hash table after sealing.
 */
const LINEAR_SCAN_LIMIT = 8;
/** Nodes sealed between two yields of `sealSteps`. */
const SEAL_STEP_NODES = 256;

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
  readonly #root = new PathNode<T>();
  /** Edge index by text of each wide node while building (see `staticChild`). */
  readonly #wideIndexes = new Map<PathNode<T>, Map<string, number>>();
  /**
   * Fully static patterns by normalized path, checked before the tree walk.
   * It is a null-prototype object rather than a Map, because V8 stores object
   * keys internalized while a Map keeps the caller's strings. On Node 20, a Map
   * lookup that compared a sliced string key took 50 ns against 8 ns for a flat one.
   */
  readonly #staticPaths: Record<string, Slot<T> | undefined> = Object.create(null);

  /** `hostLabel` names the host in conflict messages, such as `host "a.com"` or `any host`. */
  constructor(hostLabel: string) {
    this.#hostLabel = hostLabel;
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
        this.#addToSlot(node.catchAll, methods, entry);
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
  }

  /**
   * Prepares the tree for lookups, yielding after every few hundred nodes so
   * that a caller can spread the work over several turns of the event loop.
   * The tree serves lookups only after the generator has finished.
   */
  *sealSteps(): Generator<void, void, void> {
    const pending: PathNode<T>[] = [this.#root];
    let sealed = 0;
    while (pending.length > 0) {
      sealNode(pending.pop() as PathNode<T>, pending);
      if (++sealed % SEAL_STEP_NODES === 0) yield;
    }
    this.#wideIndexes.clear();
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
    const slot = this.#staticPaths[path];
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
    const slot = this.#staticPaths[rawPath];
    if (slot === undefined || !slot.requestForm) return null;
    return slotEntry(slot, method);
  }

  /** Slots of fully static patterns by normalized path; the router reads them on its fast path. */
  get staticSlots(): Readonly<Record<string, Slot<T> | undefined>> {
    return this.#staticPaths;
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
    this.#addToSlot(node.end, methods, entry);
    if (staticPath !== null && this.#staticPaths[staticPath] === undefined) {
      node.end.requestForm = normalizeRequestPath(staticPath) === staticPath;
      this.#staticPaths[staticPath] = node.end;
    }
  }

  #addToSlot(slot: Slot<T>, methods: readonly string[], entry: RouteEntry<T>): void {
    if (methods.length === 0) {
      if (slot.any !== null) this.#reject(slot.any, entry, 'any method');
      if (slot.methods.length > 0)
        this.#reject(slot.entries[0], entry, `method ${slot.methods[0]}`);
      slot.any = entry;
      return;
    }

    for (const method of methods) {
      const existing = slot.any ?? slot.entries[slot.methods.indexOf(method)];
      if (existing !== undefined) this.#reject(existing, entry, `method ${method}`);
    }
    // The first route of a slot shares its sorted method list, which the router never
    // changes. concat makes arrays of the exact length; push would reserve room for 16 more.
    if (slot.methods.length === 0 && methods.length === 1) {
      slot.methods = methods;
      slot.entries = [entry];
    } else {
      slot.methods = slot.methods.concat(methods);
      slot.entries = slot.entries.concat(methods.map(() => entry));
    }
  }

  #reject(existing: RouteEntry<T>, added: RouteEntry<T>, method: string): never {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `route ${JSON.stringify(added.route)} path ${JSON.stringify(added.pattern)} conflicts with ` +
        `route ${JSON.stringify(existing.route)} path ${JSON.stringify(existing.pattern)}: ` +
        `both match ${this.#hostLabel}, ${method} and the same paths; ` +
        'change a path, a host or the methods of one of them',
    );
  }
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
    if (dispatch === STATIC_ONLY) {
      const index = findEdge(node, path, start);
      if (index === -1) return null;
      const after = start + node.edgeTexts[index].length;
      node = node.edgeNodes[index];
      if (after === path.length) return methodEntry(node.end, method, state);
      start = after + 1;
    } else if (dispatch === PARAM_ONLY) {
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
  const first = path.charCodeAt(start);
  const buckets = node.edgeBuckets;
  if (buckets !== null) {
    // An empty edge matches an empty segment, which starts with "/" or ends the path.
    const code = first === SLASH || first !== first ? 0 : first;
    if (code >= ASCII_LIMIT) return -1;
    for (let i = buckets[code]; i < buckets[code + 1]; i++) {
      if (edgeMatches(texts[i], path, start)) return i;
    }
    return -1;
  }
  const table = node.edgeTable;
  if (table !== null) {
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

  // Comparing first characters from a small integer array skips most edges
  // without touching their strings.
  const codes = node.edgeFirstCodes;
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if ((code === first || code === EMPTY_EDGE) && edgeMatches(texts[i], path, start)) return i;
  }
  return -1;
}

/** Returns whether `text` is the whole of one or more segments of `path` from `start`. */
function edgeMatches(text: string, path: string, start: number): boolean {
  const after = start + text.length;
  if (after > path.length) return false;
  if (after < path.length && path.charCodeAt(after) !== SLASH) return false;
  if (text.length === 0) return true;
  if (path.charCodeAt(start) !== text.charCodeAt(0)) return false;

  // In a micro-benchmark on Node 20, startsWith with a position cost about 4 ns
  // per character. Slicing was fastest for texts that V8 copies (under 13
  // characters), and indexOf for longer ones (40 ns against 170 ns at 36).
  if (text.length < 13) return path.slice(start, after) === text;
  return path.indexOf(text, start) === start;
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

/**
 * Returns a 32-bit hash of the segment of `text` that starts at `start` and ends
 * before the next "/" or at the end. An empty segment hashes to 0.
 */
function segmentHash(text: string, start: number): number {
  let hash = 0;
  for (let i = start; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === SLASH) break;
    hash = (Math.imul(hash, 31) + code) | 0;
  }
  return hash;
}

/**
 * Returns the first `edgeTable` slot to probe for a `segmentHash`. Multiplying by 2^32 divided
 * by the golden ratio and keeping the top bits spreads segments that differ only in their
 * last characters (`svc0` to `svc999`). Masking the low bits of the hash instead kept their
 * hashes next to each other: 5.2 probes per hit on average and 21 at most for those 1,000 edges,
 * against 1.1 and 4 with this slot.
 */
function tableSlot(hash: number, shift: number): number {
  return Math.imul(hash, 0x9e3779b1) >>> shift;
}

function addMethods(slot: Slot<unknown> | null, allow: Set<string>): void {
  if (slot === null) return;
  for (const method of slot.methods) allow.add(method);
}

/** Returns the path the first `count` segments match when all are static, else null. */
function staticPathOf(segments: readonly PatternSegment[], count: number): string | null {
  let path = '';
  for (let i = 0; i < count; i++) {
    const segment = segments[i];
    if (segment.kind !== 'static') return null;
    path += '/' + segment.text;
  }
  return path;
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
  const wide = wideIndexes.get(node);
  const index = wide === undefined ? node.edgeTexts.indexOf(text) : (wide.get(text) ?? -1);
  if (index !== -1) return node.edgeNodes[index];

  const child = new PathNode<T>();
  if (node.edgeTexts === NO_TEXTS) {
    // Literals of one element: most nodes keep a single edge.
    node.edgeTexts = [text];
    node.edgeNodes = [child];
  } else if (node.edgeTexts.length < LINEAR_SCAN_LIMIT) {
    // Exact-length copies while a node is narrow: the first push would reserve 16 more slots,
    // which every scavenge during the build copies.
    node.edgeTexts = node.edgeTexts.concat(text);
    node.edgeNodes = node.edgeNodes.concat(child);
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

/** Seals one node and pushes the nodes below it onto `pending`. */
function sealNode<T>(node: PathNode<T>, pending: PathNode<T>[]): void {
  const texts = node.edgeTexts;
  if (texts.length > 0) {
    const nodes = node.edgeNodes;
    for (let i = 0; i < texts.length; i++) {
      while (isChainLink(nodes[i])) {
        texts[i] += '/' + nodes[i].edgeTexts[0];
        nodes[i] = nodes[i].edgeNodes[0];
      }
      pending.push(nodes[i]);
    }
    // Copies of the exact length: an array that was pushed to reserves spare room.
    node.edgeTexts = texts.slice();
    node.edgeNodes = nodes.slice();
    if (texts.length <= LINEAR_SCAN_LIMIT) {
      node.edgeFirstCodes = texts.map((text) =>
        text.length === 0 ? EMPTY_EDGE : text.charCodeAt(0),
      );
    } else {
      bucketEdges(node);
    }
  }
  if (node.mixed !== null) {
    node.mixed = node.mixed.sort((a, b) => compareMixedSegments(a.segment, b.segment)).slice();
    for (const edge of node.mixed) pending.push(edge.node);
  }
  if (node.param !== null) pending.push(node.param);
  node.dispatch = dispatchOf(node);
}

/** Returns the lookup dispatch of a sealed node (see `PathNode.dispatch`). */
function dispatchOf(node: PathNode<unknown>): number {
  if (node.mixed !== null || node.catchAll !== null) return BRANCHES;
  if (node.param === null) return STATIC_ONLY;
  return node.edgeTexts.length === 0 ? PARAM_ONLY : BRANCHES;
}

/**
 * Sorts the edges of a wide node into first-character buckets when no
 * character starts more than `LINEAR_SCAN_LIMIT` edges, else hashes them. Scanning a few edges
 * of one bucket measured faster than slicing the segment for a Map lookup.
 */
function bucketEdges<T>(node: PathNode<T>): void {
  // An edge that starts with an empty segment ("" or "/x" after chain merging) matches where
  // the path has "/" or ends, which `findEdge` looks up in bucket 0.
  const codes = node.edgeTexts.map((text) =>
    text.length === 0 || text.charCodeAt(0) === SLASH ? 0 : text.charCodeAt(0),
  );
  const counts = new Int32Array(ASCII_LIMIT + 1);
  for (const code of codes) counts[code]++;
  if (counts.some((count) => count > LINEAR_SCAN_LIMIT)) {
    hashEdges(node);
    return;
  }

  const order = codes.map((_, i) => i).sort((a, b) => codes[a] - codes[b]);
  node.edgeTexts = order.map((i) => node.edgeTexts[i]);
  node.edgeNodes = order.map((i) => node.edgeNodes[i]);
  const buckets = new Int32Array(ASCII_LIMIT + 1);
  for (let code = 0, start = 0; code < ASCII_LIMIT; code++) {
    buckets[code] = start;
    start += counts[code];
    buckets[code + 1] = start;
  }
  node.edgeBuckets = buckets;
}

/** Gives a wide node an edge table (see `PathNode.edgeTable`). */
function hashEdges<T>(node: PathNode<T>): void {
  const texts = node.edgeTexts;
  // At most half full, so a probe ends after a few slots.
  let size = 2;
  let shift = 31;
  while (size < texts.length * 2) {
    size *= 2;
    shift--;
  }
  const table = new Int32Array(size);
  const hashes = new Int32Array(texts.length);
  for (let i = 0; i < texts.length; i++) {
    const hash = segmentHash(texts[i], 0);
    hashes[i] = hash;
    let slot = tableSlot(hash, shift);
    while (table[slot] !== 0) slot = (slot + 1) & (size - 1);
    table[slot] = i + 1;
  }
  node.edgeTable = table;
  node.edgeHashes = hashes;
  node.edgeTableShift = shift;
}

/** Returns whether a node has nothing but one static child, so it can sit inside a merged edge. */
function isChainLink(node: PathNode<unknown>): boolean {
  return (
    node.edgeTexts.length === 1 &&
    node.mixed === null &&
    node.param === null &&
    node.end === null &&
    node.catchAll === null
  );
}

function createSlot<T>(): Slot<T> {
  return { any: null, methods: NO_TEXTS, entries: NO_ENTRIES, requestForm: false };
}
