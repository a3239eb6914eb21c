import { compareMixedSegments } from './mixed-segment.js';
import { normalizeRequestPath } from './path.js';
import {
  addToSlot,
  ASCII_LIMIT,
  bucketEdges,
  createSlot,
  dispatchOf,
  EMPTY_EDGE,
  isChainLink,
  LINEAR_SCAN_LIMIT,
  NO_CODES,
  NO_NODES,
  NO_TEXTS,
  PathNode,
  segmentHash,
  SLASH,
  staticPathOf,
  tableSlot,
  type Slot,
} from './path-node.js';
import type { PathPattern, PatternSegment } from './pattern.js';
import type { RouteEntry } from './route-entry.js';

/**
 * Number of edges of a sealed wide node that lead to an empty node, for the nodes that have
 * any. A copy of the node starts from its count.
 */
const tombstoneCounts = new WeakMap<PathNode<unknown>, number>();

/** Owned nodes reindexed between two yields of `TreeEditor.sealSteps`. */
const SEAL_STEP_NODES = 256;

const NO_INDEXES: readonly number[] = [];

/**
 * Thrown by `TreeEditor.remove` when the tree has no route of that name at a pattern, which
 * means the caller's idea of the tree is out of date. The caller builds the tree anew.
 */
export class MissingRouteError extends Error {
  constructor(route: string, pattern: string) {
    super(`route ${JSON.stringify(route)} path ${JSON.stringify(pattern)} is not in the tree`);
    this.name = 'MissingRouteError';
  }
}

/**
 * Slots of fully static paths that an edit changed, by normalized path. A slot replaces the
 * one the tree had; null marks a path whose routes were all removed.
 */
export type StaticChanges<T> = Record<string, Slot<T> | null | undefined>;

/**
 * Changes a sealed path tree by copying the nodes on the way to each change, so the tree that
 * is serving is never written to and shares every untouched subtree with the result. A node
 * or slot is copied once per editor and then changed in place. The copy of a wide node shares
 * its edge arrays and index with the sealed node until it writes to them, so a change under
 * it costs a bulk copy of those arrays at most, not work per edge. After `sealSteps`, `root` is
 * a sealed tree that matches as a tree built from the resulting route set would. Merged
 * edges may be split where a new route branches off inside one, and edges are merged again
 * only below the nodes the edit copied.
 */
export class TreeEditor<T> {
  root: PathNode<T>;
  readonly #staticChanges: StaticChanges<T>;
  readonly #hostLabel: string;
  readonly #owned = new Set<PathNode<T>>();
  readonly #ownedSlots = new Set<Slot<T>>();
  /**
   * For each copied wide node, how many of its first edges the bucket or hash index it took
   * from the sealed node still covers. Edges added since are after them. A removed edge
   * stays in place and leads to an empty node (see `#prune`).
   */
  readonly #indexedEdges = new Map<PathNode<T>, number>();
  /**
   * Number of edges of each copied wide node that lead to an empty node (see `#prune`). Sealing
   * drops them once they are a quarter of the node's edges.
   */
  readonly #tombstones = new Map<PathNode<T>, number>();
  /**
   * Edges of each node in `#indexedEdges` that this editor pointed at another node, which
   * sealing checks for chains to merge. The other edges lead to nodes of the sealed tree,
   * which are never chain links, so a wide node is sealed again without visiting them.
   */
  readonly #changedEdges = new Map<PathNode<T>, number[]>();
  /** Copied wide nodes whose `edgeTexts` is still the sealed node's array (see `#writableTexts`). */
  readonly #sharedTexts = new Set<PathNode<T>>();
  /** Copied wide nodes whose `edgeNodes` is still the sealed node's array. */
  readonly #sharedNodes = new Set<PathNode<T>>();
  /** Edge index by first segment of each wide owned node without a usable index, built on first use. */
  readonly #wideIndexes = new Map<PathNode<T>, Map<string, number>>();

  /** Writes the slots of static paths it changes to `staticChanges`. */
  constructor(root: PathNode<T>, staticChanges: StaticChanges<T>, hostLabel: string) {
    this.#staticChanges = staticChanges;
    this.#hostLabel = hostLabel;
    this.root = this.#own(root);
  }

  /**
   * Adds one path of one route, as `PathTree.insert` does.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` on a conflict with a route in the tree.
   */
  insert(
    pattern: PathPattern,
    methods: readonly string[],
    entry: RouteEntry<T>,
    parentEntry?: RouteEntry<T>,
  ): void {
    const segments = pattern.segments;
    let node = this.root;
    for (let i = 0; i < segments.length;) {
      const segment = segments[i];
      if (segment.kind === 'static') {
        const index = this.#edgeIndex(node, segment.text);
        if (index === -1) {
          const child = this.#create();
          this.#addEdge(node, segment.text, child);
          node = child;
          i++;
          continue;
        }
        if (isEmptyNode(node.edgeNodes[index])) {
          // An edge that an earlier removal left to an empty node: it takes the new route.
          const child = this.#create();
          if (node.edgeTexts[index] !== segment.text) {
            this.#writableTexts(node)[index] = segment.text;
          }
          this.#setEdgeNode(node, index, child);
          this.#tombstones.set(node, (this.#tombstones.get(node) ?? 1) - 1);
          node = child;
          i++;
          continue;
        }
        const parts = node.edgeTexts[index].split('/');
        const shared = sharedSegments(parts, segments, i);
        if (shared < parts.length) {
          // The route leaves a merged edge part way: the edge ends at a new node where the
          // rest of the old edge and the new route's branch start.
          const middle = this.#create();
          middle.edgeTexts = [parts.slice(shared).join('/')];
          middle.edgeNodes = [node.edgeNodes[index]];
          this.#writableTexts(node)[index] = parts.slice(0, shared).join('/');
          this.#setEdgeNode(node, index, middle);
          node = middle;
        } else {
          const child = this.#own(node.edgeNodes[index]);
          this.#setEdgeNode(node, index, child);
          node = child;
        }
        i += shared;
      } else if (segment.kind === 'param') {
        node = node.param = node.param === null ? this.#create() : this.#own(node.param);
        i++;
      } else if (segment.kind === 'mixed') {
        const mixed = (node.mixed ??= []);
        const index = mixed.findIndex((edge) => edge.segment.shape === segment.mixed.shape);
        const child = index === -1 ? this.#create() : this.#own(mixed[index].node);
        const edge = { segment: index === -1 ? segment.mixed : mixed[index].segment, node: child };
        if (index === -1) mixed.push(edge);
        else mixed[index] = edge;
        node = child;
        i++;
      } else {
        // At the root, `/**` has no parent path: `/` is already in the catch-all.
        if (segment.includesParent && i > 0) {
          this.#addEnd(node, staticPathOf(segments, i), methods, parentEntry as RouteEntry<T>);
        }
        node.catchAll = this.#ownSlot(node.catchAll);
        addToSlot(node.catchAll, methods, entry, this.#hostLabel);
        return;
      }
    }
    this.#addEnd(node, staticPathOf(segments, segments.length), methods, entry);
  }

  /**
   * Removes the entries of route `route` for one path pattern and `methods`, as `insert` was
   * given them, and every node left with nothing below it. Routes of the same name keep their
   * entries for other methods: a full build accepts such routes when their methods differ.
   *
   * @throws MissingRouteError when the tree has no entry of that route for the pattern.
   */
  remove(pattern: PathPattern, route: string, methods: readonly string[]): void {
    const segments = pattern.segments;
    const trail: PathNode<T>[] = [];
    let node = this.root;
    for (let i = 0; i < segments.length;) {
      const segment = segments[i];
      let child: PathNode<T> | null = null;
      if (segment.kind === 'static') {
        const index = this.#edgeIndex(node, segment.text);
        if (index !== -1) {
          const parts = node.edgeTexts[index].split('/');
          if (sharedSegments(parts, segments, i) === parts.length) {
            child = this.#own(node.edgeNodes[index]);
            this.#setEdgeNode(node, index, child);
            i += parts.length - 1;
          }
        }
      } else if (segment.kind === 'param') {
        if (node.param !== null) child = node.param = this.#own(node.param);
      } else if (segment.kind === 'mixed') {
        const mixed = node.mixed ?? [];
        const index = mixed.findIndex((edge) => edge.segment.shape === segment.mixed.shape);
        if (index !== -1) {
          child = this.#own(mixed[index].node);
          mixed[index] = { segment: mixed[index].segment, node: child };
        }
      } else {
        if (segment.includesParent && i > 0) {
          this.#removeEnd(node, staticPathOf(segments, i), route, methods, pattern);
        }
        node.catchAll = this.#withoutRoute(node.catchAll, route, methods, pattern);
        this.#prune(trail, node);
        return;
      }
      if (child === null) throw new MissingRouteError(route, pattern.source);
      trail.push(node);
      node = child;
      i++;
    }
    this.#removeEnd(node, staticPathOf(segments, segments.length), route, methods, pattern);
    this.#prune(trail, node);
  }

  /**
   * Prepares every copied node for lookups, as sealing does for a new tree, yielding after
   * every few hundred nodes. The editor must not be used afterwards.
   */
  *sealSteps(): Generator<void, void, void> {
    let sealed = 0;
    for (const node of this.#owned) {
      const indexed = this.#indexedEdges.get(node) ?? 0;
      const tombstones = this.#tombstones.get(node) ?? 0;
      const changed = this.#changedEdges.get(node) ?? NO_INDEXES;
      reindexNode(node, indexed, tombstones, changed, this.#sharedTexts.has(node));
      if (++sealed % SEAL_STEP_NODES === 0) yield;
    }
    this.#owned.clear();
    this.#indexedEdges.clear();
    this.#changedEdges.clear();
    this.#sharedTexts.clear();
    this.#sharedNodes.clear();
    this.#tombstones.clear();
    this.#ownedSlots.clear();
    this.#wideIndexes.clear();
  }

  #addEnd(
    node: PathNode<T>,
    staticPath: string | null,
    methods: readonly string[],
    entry: RouteEntry<T>,
  ): void {
    const slot = (node.end = this.#ownSlot(node.end));
    addToSlot(slot, methods, entry, this.#hostLabel);
    if (staticPath !== null) {
      slot.requestForm = normalizeRequestPath(staticPath) === staticPath;
      this.#staticChanges[staticPath] = slot;
    }
  }

  #removeEnd(
    node: PathNode<T>,
    staticPath: string | null,
    route: string,
    methods: readonly string[],
    pattern: PathPattern,
  ): void {
    node.end = this.#withoutRoute(node.end, route, methods, pattern);
    if (staticPath !== null) this.#staticChanges[staticPath] = node.end;
  }

  /**
   * Returns an owned copy of `slot` without the entries of `route` for `removedMethods` (empty
   * for any method), or null when none remain. Entries of one slot never share a method, so
   * these are the removed route's own entries even when another route has the same name.
   */
  #withoutRoute(
    slot: Slot<T> | null,
    route: string,
    removedMethods: readonly string[],
    pattern: PathPattern,
  ): Slot<T> | null {
    if (slot === null) throw new MissingRouteError(route, pattern.source);
    let any = slot.any;
    let methods = slot.methods;
    let entries = slot.entries;
    if (removedMethods.length === 0) {
      if (any === null || any.route !== route) throw new MissingRouteError(route, pattern.source);
      any = null;
    } else {
      const keptMethods: string[] = [];
      const keptEntries: RouteEntry<T>[] = [];
      for (let i = 0; i < methods.length; i++) {
        if (entries[i].route === route && removedMethods.includes(methods[i])) continue;
        keptMethods.push(methods[i]);
        keptEntries.push(entries[i]);
      }
      if (methods.length - keptMethods.length !== removedMethods.length) {
        throw new MissingRouteError(route, pattern.source);
      }
      methods = keptMethods;
      entries = keptEntries;
    }
    if (any === null && methods.length === 0) return null;

    const copy = this.#ownSlot(slot);
    copy.any = any;
    copy.methods = methods.length === 0 ? NO_TEXTS : methods;
    copy.entries = entries;
    return copy;
  }

  /** Detaches `node` and then each ancestor on `trail` that is left with nothing below it. */
  #prune(trail: PathNode<T>[], node: PathNode<T>): void {
    while (trail.length > 0 && isEmptyNode(node)) {
      const parent = trail.pop() as PathNode<T>;
      if (parent.param === node) {
        parent.param = null;
      } else if (parent.mixed !== null && parent.mixed.some((edge) => edge.node === node)) {
        parent.mixed = parent.mixed.filter((edge) => edge.node !== node);
      } else if (this.#indexedEdges.has(parent)) {
        // Removing the edge would shift the edges after it out of the index the wide node
        // shares, and rebuilding that costs as much as the whole edit. The edge stays and
        // leads to this empty node, which lookups pass through as if the edge were gone.
        this.#tombstones.set(parent, (this.#tombstones.get(parent) ?? 0) + 1);
        return;
      } else {
        const index = parent.edgeNodes.indexOf(node);
        this.#writableTexts(parent).splice(index, 1);
        this.#writableNodes(parent).splice(index, 1);
        this.#wideIndexes.delete(parent);
      }
      node = parent;
    }
  }

  /** Returns the index of the edge of an owned node whose first segment is `segment`, or -1. */
  #edgeIndex(node: PathNode<T>, segment: string): number {
    const texts = node.edgeTexts;
    if (texts.length <= LINEAR_SCAN_LIMIT) {
      for (let i = 0; i < texts.length; i++) {
        if (firstSegment(texts[i]) === segment) return i;
      }
      return -1;
    }
    const indexed = this.#indexedEdges.get(node);
    if (indexed !== undefined) {
      const index = indexedEdge(node, segment);
      if (index !== -1) return index;
      for (let i = indexed; i < texts.length; i++) {
        if (firstSegment(texts[i]) === segment) return i;
      }
      return -1;
    }
    let wide = this.#wideIndexes.get(node);
    if (wide === undefined) {
      wide = new Map(texts.map((text, i) => [firstSegment(text), i]));
      this.#wideIndexes.set(node, wide);
    }
    return wide.get(segment) ?? -1;
  }

  /** Points edge `index` of an owned node at `child`. */
  #setEdgeNode(node: PathNode<T>, index: number, child: PathNode<T>): void {
    this.#writableNodes(node)[index] = child;
    if (!this.#indexedEdges.has(node)) return;
    const changed = this.#changedEdges.get(node);
    if (changed === undefined) this.#changedEdges.set(node, [index]);
    else changed.push(index);
  }

  #addEdge(node: PathNode<T>, text: string, child: PathNode<T>): void {
    // A shared array is copied with the new edge in one step, because pushing to a copy of
    // the exact length would copy all the edges a second time to grow it.
    if (this.#sharedTexts.delete(node)) node.edgeTexts = node.edgeTexts.concat([text]);
    else node.edgeTexts.push(text);
    if (this.#sharedNodes.delete(node)) node.edgeNodes = node.edgeNodes.concat([child]);
    else node.edgeNodes.push(child);
    this.#wideIndexes.get(node)?.set(text, node.edgeTexts.length - 1);
  }

  /** Returns the edge nodes of an owned node, first copying them if it shares them. */
  #writableNodes(node: PathNode<T>): PathNode<T>[] {
    if (this.#sharedNodes.delete(node)) node.edgeNodes = node.edgeNodes.slice();
    return node.edgeNodes;
  }

  /** Returns the edge texts of an owned node, first copying them if it shares them. */
  #writableTexts(node: PathNode<T>): string[] {
    if (this.#sharedTexts.delete(node)) node.edgeTexts = node.edgeTexts.slice();
    return node.edgeTexts;
  }

  /** Returns `node` when this editor owns it, else an owned copy. */
  #own(node: PathNode<T>): PathNode<T> {
    if (this.#owned.has(node)) return node;
    const copy = new PathNode<T>();
    copy.mixed = node.mixed === null ? null : node.mixed.slice();
    copy.param = node.param;
    copy.end = node.end;
    copy.catchAll = node.catchAll;
    if (node.edgeBuckets !== null || node.edgeTable !== null) {
      // Typed arrays that no one writes to, so the copy can share them until it is reindexed.
      copy.edgeBuckets = node.edgeBuckets;
      copy.edgeTable = node.edgeTable;
      copy.edgeHashes = node.edgeHashes;
      copy.edgeTableShift = node.edgeTableShift;
      // The copy shares the edge arrays until it writes to them (see `#writableTexts`), and
      // many edits never write to the texts of a wide node.
      copy.edgeTexts = node.edgeTexts;
      copy.edgeNodes = node.edgeNodes;
      this.#sharedTexts.add(copy);
      this.#sharedNodes.add(copy);
      this.#indexedEdges.set(copy, node.edgeTexts.length);
      const tombstones = tombstoneCounts.get(node);
      if (tombstones !== undefined) this.#tombstones.set(copy, tombstones);
    } else {
      copy.edgeTexts = node.edgeTexts.slice();
      copy.edgeNodes = node.edgeNodes.slice();
    }
    this.#owned.add(copy);
    return copy;
  }

  #create(): PathNode<T> {
    const node = new PathNode<T>();
    node.edgeTexts = [];
    node.edgeNodes = [];
    this.#owned.add(node);
    return node;
  }

  /** Returns `slot` when this editor owns it, else an owned copy; a new slot for null. */
  #ownSlot(slot: Slot<T> | null): Slot<T> {
    if (slot !== null && this.#ownedSlots.has(slot)) return slot;
    const copy = createSlot<T>();
    if (slot !== null) {
      copy.any = slot.any;
      copy.methods = slot.methods;
      copy.entries = slot.entries;
      copy.requestForm = slot.requestForm;
    }
    this.#ownedSlots.add(copy);
    return copy;
  }
}

/**
 * Returns how many of an edge's segments `parts`, from the first, equal the pattern's static
 * segments from `start`. The first is known to be equal.
 */
function sharedSegments(
  parts: readonly string[],
  segments: readonly PatternSegment[],
  start: number,
): number {
  let shared = 1;
  while (shared < parts.length && start + shared < segments.length) {
    const segment = segments[start + shared];
    if (segment.kind !== 'static' || segment.text !== parts[shared]) break;
    shared++;
  }
  return shared;
}

/**
 * Returns the index of the edge whose first segment is `segment` by the bucket or hash index
 * of a copied wide node, or -1. Splitting or merging an edge keeps its first segment, so the
 * index stays right for the edges it covers.
 */
function indexedEdge(node: PathNode<unknown>, segment: string): number {
  const texts = node.edgeTexts;
  const buckets = node.edgeBuckets;
  if (buckets !== null) {
    const code = segment.length === 0 ? 0 : segment.charCodeAt(0);
    if (code >= ASCII_LIMIT) return -1;
    for (let i = buckets[code]; i < buckets[code + 1]; i++) {
      if (firstSegment(texts[i]) === segment) return i;
    }
    return -1;
  }
  const table = node.edgeTable as Int32Array;
  const hashes = node.edgeHashes as Int32Array;
  const hash = segmentHash(segment, 0);
  const mask = table.length - 1;
  for (
    let slot = tableSlot(hash, node.edgeTableShift);
    table[slot] !== 0;
    slot = (slot + 1) & mask
  ) {
    const index = table[slot] - 1;
    if (hashes[index] === hash && firstSegment(texts[index]) === segment) return index;
  }
  return -1;
}

function firstSegment(text: string): string {
  const slash = text.indexOf('/');
  return slash === -1 ? text : text.slice(0, slash);
}

/** Returns whether a node has no route and no child. */
export function isEmptyNode(node: PathNode<unknown>): boolean {
  return (
    node.edgeTexts.length === 0 &&
    (node.mixed === null || node.mixed.length === 0) &&
    node.param === null &&
    node.end === null &&
    node.catchAll === null
  );
}

/**
 * Rebuilds a copied node's lookup structures after an edit: merges chains below it, then
 * sets the first-character codes, buckets or edge table, the mixed order and the dispatch.
 * `indexed` is how many of its first edges the bucket or hash index shared with the sealed
 * node still covers, and `changed` lists those of them that the edit pointed at another node.
 * With `sharedTexts`, the node's `edgeTexts` is the sealed node's array, which is copied
 * before a write.
 */
function reindexNode<T>(
  node: PathNode<T>,
  indexed: number,
  tombstones: number,
  changed: readonly number[],
  sharedTexts: boolean,
): void {
  if (sharedTexts && mergesChains(node, changed)) node.edgeTexts = node.edgeTexts.slice();
  if (tombstones * 4 > node.edgeTexts.length) {
    dropEmptyEdges(node);
    indexed = 0;
  } else if (tombstones > 0) {
    tombstoneCounts.set(node, tombstones);
  }
  if (indexed === 0 || !extendEdgeIndex(node, indexed, changed)) reindexEdges(node);

  if (node.mixed !== null) {
    node.mixed =
      node.mixed.length === 0
        ? null
        : node.mixed.sort((a, b) => compareMixedSegments(a.segment, b.segment));
  }
  node.dispatch = dispatchOf(node);
}

/** Merges the chains below every edge of a node and indexes its edges anew. */
function reindexEdges(node: PathNode<unknown>): void {
  const texts = node.edgeTexts;
  for (let i = 0; i < texts.length; i++) mergeChain(node, i);
  node.edgeFirstCodes = NO_CODES;
  node.edgeBuckets = null;
  node.edgeTable = null;
  node.edgeHashes = null;
  node.edgeTableShift = 32;
  if (texts.length === 0) {
    node.edgeTexts = NO_TEXTS;
    node.edgeNodes = NO_NODES;
  } else if (texts.length <= LINEAR_SCAN_LIMIT) {
    node.edgeFirstCodes = texts.map((text) =>
      text.length === 0 ? EMPTY_EDGE : text.charCodeAt(0),
    );
  } else {
    bucketEdges(node);
  }
}

/**
 * Reseals a copied wide node in time proportional to its changed and added edges, plus a
 * bulk copy of its index when edges were added, and returns false when the index it shares
 * has no room for the added edges. Only the changed and added edges can lead to a chain link:
 * the others lead to nodes of a sealed tree, where every chain below an edge is merged. The
 * shared index stays right for the `indexed` edges it covers, because merging or splitting an
 * edge keeps its first segment.
 */
function extendEdgeIndex(
  node: PathNode<unknown>,
  indexed: number,
  changed: readonly number[],
): boolean {
  const texts = node.edgeTexts;
  for (const index of changed) mergeChain(node, index);
  for (let i = indexed; i < texts.length; i++) mergeChain(node, i);
  // Without added edges, the node keeps the index it shares with the sealed node.
  if (texts.length === indexed) return true;

  const table = node.edgeTable;
  if (table !== null) {
    if (texts.length * 2 > table.length) return false;
    extendEdgeTable(node, table, indexed);
    return true;
  }
  return extendEdgeBuckets(node, indexed);
}

/**
 * Returns whether one of the `changed` edges of a copied wide node leads to a chain link, so
 * that sealing writes to the node's edge texts. Adding an edge copied the texts already.
 */
function mergesChains(node: PathNode<unknown>, changed: readonly number[]): boolean {
  return changed.some((index) => isChainLink(node.edgeNodes[index]));
}

/** Merges the chain of nodes below edge `index` into that edge (see `sealNode`). */
function mergeChain(node: PathNode<unknown>, index: number): void {
  const texts = node.edgeTexts;
  const nodes = node.edgeNodes;
  while (isChainLink(nodes[index])) {
    texts[index] += '/' + nodes[index].edgeTexts[0];
    nodes[index] = nodes[index].edgeNodes[0];
  }
}

/**
 * Moves the edges from `indexed` on into their first-character buckets (see `bucketEdges`),
 * in a copy of the shared bucket starts, and returns false without a change when a bucket
 * would then hold more than `LINEAR_SCAN_LIMIT` edges.
 */
function extendEdgeBuckets(node: PathNode<unknown>, indexed: number): boolean {
  const buckets = node.edgeBuckets as Int32Array;
  const texts = node.edgeTexts;
  const nodes = node.edgeNodes;
  const codes = texts.slice(indexed).map(bucketCode);
  const added = new Int32Array(ASCII_LIMIT);
  for (const code of codes) {
    if (code >= ASCII_LIMIT) return false;
    if (buckets[code + 1] - buckets[code] + ++added[code] > LINEAR_SCAN_LIMIT) return false;
  }

  const extended = buckets.slice();
  const addedTexts = texts.splice(indexed);
  const addedNodes = nodes.splice(indexed);
  for (let i = 0; i < codes.length; i++) {
    // The edge goes to the end of its bucket, and the buckets after it start one edge later.
    const code = codes[i];
    const position = extended[code + 1];
    texts.splice(position, 0, addedTexts[i]);
    nodes.splice(position, 0, addedNodes[i]);
    for (let next = code + 1; next <= ASCII_LIMIT; next++) extended[next]++;
  }
  node.edgeBuckets = extended;
  return true;
}

/** Returns the bucket of an edge text, as `bucketEdges` sorts it: an empty first segment is 0. */
function bucketCode(text: string): number {
  return text.length === 0 || text.charCodeAt(0) === SLASH ? 0 : text.charCodeAt(0);
}

/** Removes the edges that lead to an empty node. */
function dropEmptyEdges(node: PathNode<unknown>): void {
  const texts: string[] = [];
  const nodes: PathNode<unknown>[] = [];
  for (let i = 0; i < node.edgeTexts.length; i++) {
    if (isEmptyNode(node.edgeNodes[i])) continue;
    texts.push(node.edgeTexts[i]);
    nodes.push(node.edgeNodes[i]);
  }
  node.edgeTexts = texts;
  node.edgeNodes = nodes;
}

/** Gives a node a copy of `table` with the edges from `indexed` on added (see `hashEdges`). */
function extendEdgeTable(node: PathNode<unknown>, table: Int32Array, indexed: number): void {
  const texts = node.edgeTexts;
  const extended = table.slice();
  const hashes = new Int32Array(texts.length);
  hashes.set((node.edgeHashes as Int32Array).subarray(0, indexed));
  const mask = extended.length - 1;
  for (let i = indexed; i < texts.length; i++) {
    const hash = segmentHash(texts[i], 0);
    hashes[i] = hash;
    let slot = tableSlot(hash, node.edgeTableShift);
    while (extended[slot] !== 0) slot = (slot + 1) & mask;
    extended[slot] = i + 1;
  }
  node.edgeTable = extended;
  node.edgeHashes = hashes;
}
