import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import { PathNode } from '../../data-plane/router/path-node.js';
import { parsePattern } from '../../data-plane/router/pattern.js';
import { createRouteEntry } from '../../data-plane/router/route-entry.js';
import { buildRouter, updateRouter } from '../../data-plane/router/router.js';
import { TreeEditor } from '../../data-plane/router/tree-editor.js';
import type { Router, RouterMatch, RouterRoute } from '../../data-plane/router/types.js';

/**
 * Differential tests of router updates under wide nodes. A node with more than eight static
 * edges keeps a bucket or hash index, which an update shares, extends or rebuilds. After every
 * update the router must match requests as a fresh `buildRouter` of the same routes does, and
 * the router it started from must still match as a fresh build of its own routes.
 */

type Route = RouterRoute<string>;

/** Shapes of the edges under one parent, by how the parent indexes them once sealed. */
const PREFIXES: Record<string, (k: number) => string> = {
  // Every edge starts with "r", so more than eight of them need the hash table.
  hashed: (k) => `/r${k}`,
  // A few edges per first character, so the parent keeps buckets.
  bucketed: (k) => `/${'abcdefghijklmnopqrstuvwxyz'[k % 26]}${Math.floor(k / 26)}`,
  // 26 edges in buckets, then more and more that start with "a", which overflow the bucket.
  crowding: (k) => (k < 26 ? `/${'abcdefghijklmnopqrstuvwxyz'[k]}0` : `/a${k - 25}`),
  // Under a static parent, so the wide node is not the root.
  nested: (k) => `/api/svc${k}`,
};

/** Path variants of one slot under its prefix. Routes of different slots never conflict. */
const VARIANTS = [
  (p: string) => `${p}/:id`,
  (p: string) => p,
  (p: string) => `${p}/v/:id`,
  (p: string) => `${p}/x/y/z`,
  (p: string) => `${p}/x/w`,
  (p: string) => `${p}/*rest`,
  (p: string) => `${p}/:id/items`,
];

const METHOD_SETS: string[][] = [[], ['GET'], ['POST'], ['GET', 'PUT']];

function routeOf(prefix: (k: number) => string, slot: number, variant: number, methods: number) {
  const name = `route-${slot}`;
  const route: Route = {
    name,
    value: name,
    hosts: [],
    paths: [VARIANTS[variant](prefix(slot))],
    methods: METHOD_SETS[methods],
  };
  return route;
}

/** Request paths that reach every variant of every slot, and near misses. */
function requestPaths(prefix: (k: number) => string, slots: number): string[] {
  const paths = ['/', '/zz', '/api', '/api/zz'];
  for (let k = 0; k < slots; k++) {
    const p = prefix(k);
    paths.push(p, `${p}/1`, `${p}/v/1`, `${p}/v`, `${p}/x/y/z`, `${p}/x/w`, `${p}/x`);
    paths.push(`${p}/x/y`, `${p}/a/b`, `${p}/1/items`, `${p}/`);
  }
  return paths;
}

/** Reduces a match to plain data, so the results of two routers compare with `deepEqual`. */
function plain(match: RouterMatch<string>): unknown {
  if (match.kind !== 'found') return match;
  return { kind: 'found', route: match.route, params: { ...match.params } };
}

function assertSameMatches(
  actual: Router<string>,
  routes: Route[],
  paths: string[],
  context: string,
) {
  const expected = buildRouter(routes);
  for (const path of paths) {
    for (const method of ['GET', 'POST', 'PUT']) {
      assert.deepEqual(
        plain(actual.find(method, undefined, path)),
        plain(expected.find(method, undefined, path)),
        `${method} ${path} after ${context}`,
      );
    }
  }
}

/** A change of one slot in a chain of updates. */
interface Operation {
  slot: number;
  variant: number;
  methods: number;
  /** Adds or replaces the slot's route when true, removes it when false. */
  present: boolean;
}

const operationArbitrary = (slots: number) =>
  fc.record({
    slot: fc.nat(slots - 1),
    variant: fc.nat(VARIANTS.length - 1),
    methods: fc.nat(METHOD_SETS.length - 1),
    present: fc.boolean(),
  });

/**
 * Builds a router of the slots in `initial`, applies each batch of operations as one update,
 * and checks the result and the router it came from against fresh builds.
 */
function runChain(
  prefix: (k: number) => string,
  slots: number,
  initial: Operation[],
  batches: Operation[][],
): void {
  const current = new Map<number, Route>();
  for (const operation of initial) {
    if (operation.present) {
      current.set(
        operation.slot,
        routeOf(prefix, operation.slot, operation.variant, operation.methods),
      );
    }
  }
  const paths = requestPaths(prefix, slots);
  let router = buildRouter([...current.values()]);
  batches.forEach((batch, step) => {
    const before = [...current.values()];
    const removed = new Map<number, Route>();
    const added = new Map<number, Route>();
    for (const operation of batch) {
      const old = current.get(operation.slot);
      if (old !== undefined && !added.has(operation.slot)) removed.set(operation.slot, old);
      added.delete(operation.slot);
      current.delete(operation.slot);
      if (operation.present) {
        const next = routeOf(prefix, operation.slot, operation.variant, operation.methods);
        added.set(operation.slot, next);
        current.set(operation.slot, next);
      }
    }
    const updated = updateRouter(router, [...removed.values()], [...added.values()]);
    const context = `step ${step}: ${JSON.stringify(batch)}`;
    assert.ok(updated !== null, context);
    assert.equal(updated.size, current.size, context);
    assertSameMatches(updated, [...current.values()], paths, context);
    assertSameMatches(router, before, paths, `${context} (previous router)`);
    router = updated;
  });
}

/** Operations that give a slot a route of any method, or remove its route. */
const present = (slot: number, variant = 0): Operation => ({
  slot,
  variant,
  methods: 0,
  present: true,
});
const absent = (slot: number): Operation => ({ slot, variant: 0, methods: 0, present: false });
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe('router updates under wide nodes', () => {
  for (const [shape, prefix] of Object.entries(PREFIXES)) {
    test(`random updates agree (${shape})`, () => {
      const slots = 40;
      fc.assert(
        fc.property(
          fc.array(operationArbitrary(slots), { minLength: 10, maxLength: 40 }),
          fc.array(fc.array(operationArbitrary(slots), { minLength: 1, maxLength: 3 }), {
            minLength: 1,
            maxLength: 25,
          }),
          (initial, batches) => runChain(prefix, slots, initial, batches),
        ),
        { numRuns: 40 },
      );
    });

    test(`removals past compaction agree (${shape})`, () => {
      // 40 edges, removed one per update until 30 are gone, which passes the quarter of
      // removed edges at which sealing drops them, then added back one per update.
      const initial = range(0, 40).map((k) => present(k));
      const removals = range(0, 30).map((k) => [absent(k)]);
      const readds = range(0, 30).map((k) => [present(k, k % VARIANTS.length)]);
      runChain(prefix, 40, initial, [...removals, ...readds]);
    });

    test(`added edges past capacity agree (${shape})`, () => {
      // From 10 edges to 60, one per update: the hash table fills and is rebuilt larger,
      // and in the crowding shape a bucket overflows into a hash table.
      const initial = range(0, 10).map((k) => present(k));
      runChain(
        prefix,
        60,
        initial,
        range(10, 60).map((k) => [present(k, k % VARIANTS.length)]),
      );
    });

    test(`removed edges reused agree (${shape})`, () => {
      // A removed route leaves an edge to an empty node, and the next route under the same
      // first segment takes that edge, with another variant, so the edge text changes.
      const initial = range(0, 20).map((k) => present(k, 3));
      const batches = range(0, 20).flatMap((k) => [[absent(k)], [present(k, (k % 6) + 1)]]);
      runChain(prefix, 20, initial, batches);
    });
  }

  test('narrow node updates agree', () => {
    fc.assert(
      fc.property(
        fc.array(operationArbitrary(6), { minLength: 1, maxLength: 6 }),
        fc.array(fc.array(operationArbitrary(6), { minLength: 1, maxLength: 3 }), {
          minLength: 1,
          maxLength: 15,
        }),
        (initial, batches) => runChain(PREFIXES.hashed, 6, initial, batches),
      ),
      { numRuns: 100 },
    );
  });

  test('sibling updates stay apart', () => {
    const routes = range(0, 30).map((k) => routeOf(PREFIXES.hashed, k, 0, 0));
    const base = buildRouter(routes);
    const left = routeOf(PREFIXES.hashed, 100, 3, 0);
    const right = routeOf(PREFIXES.hashed, 101, 2, 0);
    const first = updateRouter(base, [], [left]);
    const second = updateRouter(base, [routes[5]], [right]);
    assert.ok(first !== null);
    assert.ok(second !== null);
    const paths = requestPaths(PREFIXES.hashed, 102);
    assertSameMatches(base, routes, paths, 'two sibling updates');
    assertSameMatches(first, [...routes, left], paths, 'the first sibling');
    assertSameMatches(
      second,
      [...routes.filter((_, k) => k !== 5), right],
      paths,
      'the second sibling',
    );
  });
});

describe('router updates that empty a host', () => {
  test('host without routes is dropped', () => {
    // Ten edges under /api make a wide node, whose emptied edges an update keeps until sealed.
    const hosted = range(0, 10).map<Route>((k) => ({
      name: `s${k}`,
      value: `s${k}`,
      hosts: ['a.com'],
      paths: [`/api/s${k}/x`],
      methods: [],
    }));
    const anyHost: Route = { name: 'h', value: 'h', hosts: [], paths: ['/h'], methods: [] };
    const base = buildRouter([...hosted, anyHost]);
    const updated = updateRouter(base, hosted, []);
    assert.ok(updated !== null);

    const index = (updated as unknown as { index: { exactHosts: Map<string, unknown> } }).index;
    assert.equal(index.exactHosts.size, 0);
    assert.equal(updated.find('GET', 'a.com', '/h').kind, 'found');
    assert.equal(updated.find('GET', 'a.com', '/api/s3/x').kind, 'not-found');
  });
});

/** Builds and seals a tree of the given paths with a `TreeEditor`, one route per path. */
function sealedTree(paths: string[]): PathNode<string> {
  return editTree(new PathNode<string>(), paths);
}

/**
 * Removes the routes of `removed` from a copy of `root`, adds routes for `paths` and returns
 * the sealed copy. Each route is named by its path.
 */
function editTree(
  root: PathNode<string>,
  paths: string[],
  removed: string[] = [],
): PathNode<string> {
  const editor = new TreeEditor(root, {}, 'any host');
  for (const path of removed) editor.remove(parsePattern(path, path), path, []);
  for (const path of paths) {
    const pattern = parsePattern(path, path);
    editor.insert(pattern, [], createRouteEntry(path, path, pattern, pattern.names));
  }
  const steps = editor.sealSteps();
  while (steps.next().done !== true) {
    // Each step reindexes a few hundred nodes.
  }
  return editor.root;
}

/** Copies the parts of a sealed node that an edit must not write to. */
function snapshotOf(node: PathNode<string>) {
  return {
    texts: [...node.edgeTexts],
    nodes: [...node.edgeNodes],
    table: node.edgeTable === null ? null : [...node.edgeTable],
    hashes: node.edgeHashes === null ? null : [...node.edgeHashes],
    buckets: node.edgeBuckets === null ? null : [...node.edgeBuckets],
  };
}

describe('tree editor on wide nodes', () => {
  const hashedPaths = range(0, 40).map((k) => `/r${k}/:id`);

  test('change under hashed node shares index', () => {
    const base = sealedTree(hashedPaths);
    assert.ok(base.edgeTable !== null);
    const before = snapshotOf(base);
    const edited = editTree(base, ['/r7/v/:id'], ['/r7/:id']);

    assert.notEqual(edited, base);
    assert.equal(edited.edgeTable, base.edgeTable);
    assert.equal(edited.edgeHashes, base.edgeHashes);
    assert.notEqual(edited.edgeNodes, base.edgeNodes);
    // The chain below the changed edge is merged into it.
    assert.ok(edited.edgeTexts.includes('r7/v'), JSON.stringify(edited.edgeTexts.slice(0, 10)));
    assert.deepEqual(snapshotOf(base), before);
  });

  test('unchanged edge texts stay shared', () => {
    const base = sealedTree(range(0, 40).map((k) => `/api/svc${k}/items/:id`));
    // The root's one edge `api` leads to the wide node.
    const wide = base.edgeNodes[0];
    assert.ok(wide.edgeTable !== null);
    const before = snapshotOf(wide);
    const edited = editTree(base, ['/api/svc3/items/:id/more']).edgeNodes[0];

    assert.notEqual(edited, wide);
    assert.equal(edited.edgeTexts, wide.edgeTexts);
    assert.equal(edited.edgeTable, wide.edgeTable);
    assert.deepEqual(snapshotOf(wide), before);
  });

  test('added edge copies hash table', () => {
    const base = sealedTree(hashedPaths);
    const before = snapshotOf(base);
    const edited = editTree(base, ['/r99/:id']);

    assert.notEqual(edited.edgeTable, base.edgeTable);
    assert.equal(edited.edgeTable?.length, base.edgeTable?.length);
    assert.equal(edited.edgeTexts.length, 41);
    assert.equal(edited.edgeTexts[40], 'r99');
    assert.deepEqual(snapshotOf(base), before);
  });

  test('added edge joins its bucket', () => {
    const base = sealedTree(range(0, 40).map((k) => `${PREFIXES.bucketed(k)}/:id`));
    assert.ok(base.edgeBuckets !== null);
    const before = snapshotOf(base);
    const edited = editTree(base, ['/c9/:id', '/a9/:id']);

    assert.ok(edited.edgeBuckets !== null);
    assert.notEqual(edited.edgeBuckets, base.edgeBuckets);
    assert.equal(edited.edgeTexts.length, 42);
    const codes = edited.edgeTexts.map((text) => text.charCodeAt(0));
    assert.deepEqual(
      codes,
      [...codes].sort((a, b) => a - b),
    );
    for (const letter of ['a', 'c']) {
      const code = letter.charCodeAt(0);
      const bucket = edited.edgeTexts.slice(edited.edgeBuckets[code], edited.edgeBuckets[code + 1]);
      assert.ok(bucket.includes(`${letter}9`), `bucket ${letter} is ${JSON.stringify(bucket)}`);
      assert.ok(
        bucket.every((text) => text.startsWith(letter)),
        `bucket ${letter} is ${JSON.stringify(bucket)}`,
      );
    }
    assert.deepEqual(snapshotOf(base), before);
  });
});
