import { LoomError } from '../../common/errors.js';
import { compareMixedSegments, type MixedSegment } from './mixed-segment.js';
import type { PatternSegment } from './pattern.js';
import type { RouteEntry } from './route-entry.js';

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
export interface MixedEdge<T> {
  segment: MixedSegment;
  node: PathNode<T>;
}

/** Lookup dispatch of a node with static edges only (or no children). */
export const STATIC_ONLY = 0;
/** Lookup dispatch of a node whose only child is a param. */
export const PARAM_ONLY = 1;
/** Lookup dispatch of any other node, and of every node before sealing. */
export const BRANCHES = 2;

// Empty arrays with packed object elements, like the non-empty ones. An empty literal would
// have small-integer elements, which add a third map at the loads in `findEdge` and `slotEntry`.
export const NO_TEXTS: string[] = [''].slice(1);
export const NO_NODES: PathNode<never>[] = [null as unknown as PathNode<never>].slice(1);
export const NO_ENTRIES: RouteEntry<never>[] = [null as unknown as RouteEntry<never>].slice(1);
export const NO_CODES: number[] = [];
/** First-character code of an empty edge text, which matches an empty segment. */
export const EMPTY_EDGE = -1;

export class PathNode<T> {
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

export const SLASH = 0x2f;
/** Pattern text is ASCII, so no edge starts with a character code at or above this. */
export const ASCII_LIMIT = 128;

/**
 * Edges beyond which a node looks the first segment up instead of scanning: in a Map while
 * building, in buckets or a hash table after sealing.
 */
export const LINEAR_SCAN_LIMIT = 8;

/**
 * Returns a 32-bit hash of the segment of `text` that starts at `start` and ends
 * before the next "/" or at the end. An empty segment hashes to 0.
 */
export function segmentHash(text: string, start: number): number {
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
export function tableSlot(hash: number, shift: number): number {
  return Math.imul(hash, 0x9e3779b1) >>> shift;
}

/**
 * Words of a static-length set: a bitset with one bit per path length below
 * `LONG_STATIC_LENGTH` and one bit shared by every longer length.
 */
export const STATIC_LENGTH_WORDS = 8;
const LONG_STATIC_LENGTH = STATIC_LENGTH_WORDS * 32 - 1;

/** Adds a static path's length to a static-length set. */
export function addStaticLength(lengths: Int32Array, length: number): void {
  const bit = length < LONG_STATIC_LENGTH ? length : LONG_STATIC_LENGTH;
  lengths[bit >> 5] |= 1 << (bit & 31);
}

/**
 * Returns whether some static path may have `length`. A false result lets a lookup skip the
 * static-path object, where a miss hashes the whole path (about 10 ns of a 130 to 200 ns
 * lookup in `bench/router/breakdown.ts` on Node 20).
 */
export function hasStaticLength(lengths: Int32Array, length: number): boolean {
  const bit = length < LONG_STATIC_LENGTH ? length : LONG_STATIC_LENGTH;
  return (lengths[bit >> 5] & (1 << (bit & 31))) !== 0;
}

/** Returns the path the first `count` segments match when all are static, else null. */
export function staticPathOf(segments: readonly PatternSegment[], count: number): string | null {
  let path = '';
  for (let i = 0; i < count; i++) {
    const segment = segments[i];
    if (segment.kind !== 'static') return null;
    path += '/' + segment.text;
  }
  return path;
}

/** Seals one node and pushes the nodes below it onto `pending`. */
export function sealNode<T>(node: PathNode<T>, pending: PathNode<T>[]): void {
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
    if (texts.length <= LINEAR_SCAN_LIMIT) {
      // A narrow node's arrays were built at exact length (see `staticChild` in path-tree.ts).
      node.edgeFirstCodes = texts.map((text) =>
        text.length === 0 ? EMPTY_EDGE : text.charCodeAt(0),
      );
    } else {
      // Copies of the exact length: an array that was pushed to reserves spare room.
      node.edgeTexts = texts.slice();
      node.edgeNodes = nodes.slice();
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
export function dispatchOf(node: PathNode<unknown>): number {
  if (node.mixed !== null || node.catchAll !== null) return BRANCHES;
  if (node.param === null) return STATIC_ONLY;
  return node.edgeTexts.length === 0 ? PARAM_ONLY : BRANCHES;
}

/**
 * Sorts the edges of a wide node into first-character buckets when no
 * character starts more than `LINEAR_SCAN_LIMIT` edges, else hashes them. Scanning a few edges
 * of one bucket measured faster than slicing the segment for a Map lookup.
 */
export function bucketEdges<T>(node: PathNode<T>): void {
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
export function hashEdges<T>(node: PathNode<T>): void {
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
export function isChainLink(node: PathNode<unknown>): boolean {
  return (
    node.edgeTexts.length === 1 &&
    node.mixed === null &&
    node.param === null &&
    node.end === null &&
    node.catchAll === null
  );
}

export function createSlot<T>(): Slot<T> {
  return { any: null, methods: NO_TEXTS, entries: NO_ENTRIES, requestForm: false };
}

/**
 * Adds a route's entry to a slot for each of its methods; empty `methods` means any method.
 * `hostLabel` names the tree's host in the error, such as `host "a.com"` or `any host`.
 *
 * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when a route in the slot already matches one
 *   of the methods.
 */
export function addToSlot<T>(
  slot: Slot<T>,
  methods: readonly string[],
  entry: RouteEntry<T>,
  hostLabel: string,
): void {
  if (methods.length === 0) {
    if (slot.any !== null) rejectConflict(slot.any, entry, 'any method', hostLabel);
    if (slot.methods.length > 0) {
      rejectConflict(slot.entries[0], entry, `method ${slot.methods[0]}`, hostLabel);
    }
    slot.any = entry;
    return;
  }

  if (slot.any !== null) rejectConflict(slot.any, entry, `method ${methods[0]}`, hostLabel);
  for (const method of methods) {
    // Reading entries[-1] would be a slow property lookup, so the index is checked first.
    const index = slot.methods.indexOf(method);
    if (index !== -1) rejectConflict(slot.entries[index], entry, `method ${method}`, hostLabel);
  }
  // The first route of a slot shares its sorted method list, which the router never
  // changes. The copies have exact length: push would reserve room for 16 more.
  if (slot.methods.length === 0 && methods.length === 1) {
    slot.methods = methods;
    slot.entries = [entry];
  } else {
    for (const method of methods) {
      slot.methods = appendCopy(slot.methods, method);
      slot.entries = appendCopy(slot.entries, entry);
    }
  }
}

/**
 * Returns a copy of `items` with `item` appended, at exact length and with packed elements.
 * On Node 20 the copy loop below took about 50 ns for up to 8 strings, against 260 to 420 ns
 * for `concat`, which also returns holey elements. Spreading into an array literal took 125
 * to 150 ns and reserved 22 slots.
 */
export function appendCopy<E>(items: readonly E[], item: E): E[] {
  // Array literals have packed elements, where `new Array(n)` has holey ones. Lookups read
  // edge arrays of every node at the same places, which then check two maps (polymorphic
  // loads). Literals cover the arrays of narrow nodes, up to `LINEAR_SCAN_LIMIT` items.
  switch (items.length) {
    case 0:
      return [item];
    case 1:
      return [items[0], item];
    case 2:
      return [items[0], items[1], item];
    case 3:
      return [items[0], items[1], items[2], item];
    case 4:
      return [items[0], items[1], items[2], items[3], item];
    case 5:
      return [items[0], items[1], items[2], items[3], items[4], item];
    case 6:
      return [items[0], items[1], items[2], items[3], items[4], items[5], item];
    case 7:
      return [items[0], items[1], items[2], items[3], items[4], items[5], items[6], item];
    default:
      break;
  }
  // NOTE: a first build in a fresh process runs this loop before V8 optimizes it. The median
  // first build of a 1,000-route table took 13.4 ms with it, 12.5 ms with `concat`.
  const copy = new Array<E>(items.length + 1);
  for (let i = 0; i < items.length; i++) copy[i] = items[i];
  copy[items.length] = item;
  return copy;
}

function rejectConflict<T>(
  existing: RouteEntry<T>,
  added: RouteEntry<T>,
  method: string,
  hostLabel: string,
): never {
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(added.route)} path ${JSON.stringify(added.pattern)} conflicts with ` +
      `route ${JSON.stringify(existing.route)} path ${JSON.stringify(existing.pattern)}: ` +
      `both match ${hostLabel}, ${method} and the same paths; ` +
      'change a path, a host or the methods of one of them',
  );
}
