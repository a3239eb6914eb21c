import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { buildTable } from '../../data-plane/build-table.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { RoutingTable } from '../../data-plane/table.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { lookupAll, registry, settle, upstream, type TableRequest } from './table-fixtures.js';

/**
 * Adversarial version sequences for the incremental table build: each version goes through one
 * long-lived decoder and `buildTable` with `previous`, and must look up like a full build of a
 * fresh decode, while the previous table keeps its results.
 */

const UPSTREAMS: Upstream[] = [upstream('u1', 9), upstream('u2', 10)];

function route(name: string, paths: string[], methods: string[] = [], target = 'u1'): Route {
  return { name, hosts: [], paths, methods, upstream: target };
}

function requestsOf(routes: readonly Route[]): TableRequest[] {
  const requests: TableRequest[] = [];
  for (const item of routes) {
    for (const path of item.paths) {
      const concrete = path.replace(/\*\*?\w+/, 'x/y').replace(/:\w+/g, 'v1');
      for (const method of ['GET', 'POST', 'PUT', 'DELETE']) {
        requests.push({ method, host: undefined, path: concrete });
      }
      requests.push({ method: 'HEAD', host: undefined, path: concrete + '/' });
      requests.push({ method: 'GET', host: 'a.com', path: concrete });
      requests.push({ method: 'POST', host: 'x.b.com', path: concrete });
      requests.push({
        method: 'GET',
        host: undefined,
        path: concrete.slice(0, concrete.lastIndexOf('/') + 1),
      });
      requests.push({ method: 'GET', host: undefined, path: concrete + '/more' });
    }
  }
  return requests;
}

class Chain {
  readonly #decoder = new SnapshotDecoder();
  readonly #incremental = registry();
  readonly #fresh = registry();
  #table: RoutingTable | undefined;
  #version = 0;
  /**
   * Requests for the paths of every route applied so far, each once: the lookups are pure, so
   * a repeated request would only repeat a check.
   */
  readonly #requests: TableRequest[] = [];
  readonly #requestKeys = new Set<string>();
  /** Versions whose router was an update of the previous one (its tree has static changes). */
  updates = 0;

  async apply(routes: Route[], upstreams: Upstream[] = UPSTREAMS): Promise<boolean> {
    const version = ++this.#version;
    for (const request of requestsOf(routes)) {
      const key = `${request.method} ${request.host ?? ''} ${request.path}`;
      if (this.#requestKeys.has(key)) continue;
      this.#requestKeys.add(key);
      this.#requests.push(request);
    }
    const requests = this.#requests;
    const bytes = buildSnapshot('epoch', version, routes, upstreams).encoded;
    const snapshot = this.#decoder.decode(bytes).snapshot!;
    const copy = StreamResponse.decode(bytes).snapshot!;
    const previous = this.#table;
    const before = previous?.router === undefined ? undefined : lookupAll(previous, requests);
    const incremental = await settle(buildTable(snapshot, this.#incremental, { previous }));
    const full = await settle(buildTable(copy, this.#fresh, {}));
    const listed = routes.map(
      (item) =>
        `${item.name} ${item.methods.join(',') || '*'} ${item.paths.join(' ')} -> ${item.upstream}`,
    );
    const context = `version ${version}: ${listed.join('; ')}`;

    if (!full.ok) {
      assert.equal(incremental.ok ? 'accepted' : incremental.error, full.error, context);
    } else {
      assert.ok(
        incremental.ok,
        `update rejected: ${incremental.ok ? '' : incremental.error}; ${context}`,
      );
      const table = incremental.table;
      assert.equal(table.router.size, full.table.router.size, context);
      const actual = lookupAll(table, requests);
      const expected = lookupAll(full.table, requests);
      for (let i = 0; i < requests.length; i++) {
        assert.deepEqual(
          actual[i],
          expected[i],
          `request ${JSON.stringify(requests[i])}; ${context}`,
        );
      }
      this.#table = table;
      const tree = (table.router as { index?: { anyHost: { staticChanges: unknown } | null } })
        .index?.anyHost;
      if (tree !== undefined && tree !== null && tree.staticChanges !== null) this.updates++;
    }

    if (previous !== undefined && before !== undefined) {
      assert.deepEqual(lookupAll(previous, requests), before, `previous table changed; ${context}`);
    }
    return full.ok;
  }
}

function base(count: number): Route[] {
  return Array.from({ length: count }, (_, i) =>
    route(`r${String(i).padStart(3, '0')}`, [`/s${i % 7}/r${i}/:id`]),
  );
}

describe('incremental table build against a full build, adversarial sequences', () => {
  test('twenty one-route edits in a row', async () => {
    const chain = new Chain();
    let routes = base(100);
    await chain.apply(routes);
    for (let step = 0; step < 20; step++) {
      routes = routes.slice();
      const at = (step * 37) % routes.length;
      routes[at] = route(routes[at].name, [`/edit${step}/:p${step}/x`, `/static${step}`]);
      await chain.apply(routes);
    }
    assert.ok(chain.updates >= 15, `only ${chain.updates} of 20 versions updated the router`);
    // A reorder needs the full binding list of the spliced chain.
    routes = routes.slice().reverse();
    await chain.apply(routes);
  });

  test('sixteen one-route inserts and removals', async () => {
    const chain = new Chain();
    let routes = base(60);
    await chain.apply(routes);
    for (let step = 0; step < 16; step++) {
      routes = routes.slice();
      if (step % 2 === 0)
        routes.splice((step * 13) % routes.length, 0, route(`n${step}`, [`/new/${step}/:q`]));
      else routes.splice((step * 11) % routes.length, 1);
      await chain.apply(routes);
    }
  });

  test('changes at the 10 % update limit', async () => {
    const chain = new Chain();
    let routes = base(100);
    await chain.apply(routes);
    for (const changed of [5, 6, 4, 5]) {
      routes = routes.slice();
      for (let i = 0; i < changed; i++) {
        const at = (i * 17 + changed) % routes.length;
        routes[at] = route(routes[at].name, [`/ten${changed}/${i}/:k${i}`], ['GET']);
      }
      await chain.apply(routes);
    }
  });

  test('moved and renamed route', async () => {
    const chain = new Chain();
    let routes = base(50);
    await chain.apply(routes);
    routes = [...routes.slice(1, 30), routes[0], ...routes.slice(30)];
    await chain.apply(routes);
    routes = [routes[29], ...routes.slice(0, 29), ...routes.slice(30)];
    await chain.apply(routes);
    routes = routes.slice();
    routes[10] = { ...routes[10], name: 'renamed' };
    await chain.apply(routes);
    routes = routes.slice();
    routes[10] = { ...routes[10], name: 'r010' };
    await chain.apply(routes);
  });

  test('same route bytes twice', async () => {
    const chain = new Chain();
    let routes = base(30);
    await chain.apply(routes);
    routes = [...routes, routes[5]];
    await chain.apply(routes);
    routes = [...routes.slice(0, 30), route('twin', ['/twin']), route('twin', ['/twin'], ['POST'])];
    await chain.apply(routes);
    routes = [...routes.slice(0, 30), route('twin', ['/twin'], ['POST']), route('twin', ['/twin'])];
    await chain.apply(routes);
  });

  test('upstream changes between route edits', async () => {
    const chain = new Chain();
    let routes = base(40).map((item, i) => ({ ...item, upstream: i % 3 === 0 ? 'u2' : 'u1' }));
    await chain.apply(routes);
    for (let step = 0; step < 12; step++) {
      routes = routes.slice();
      routes[step] = route(routes[step].name, [`/up${step}`], [], 'u2');
      await chain.apply(routes);
      await chain.apply(routes, step % 2 === 0 ? [upstream('u2', 20 + step)] : UPSTREAMS);
    }
  });

  test('one-route update with unseen param names', async () => {
    const chain = new Chain();
    let routes = base(40);
    await chain.apply(routes);
    routes = [...routes, route('fresh', ['/fresh/:zq81NeverSeen/:zq82Other/**zq83Rest'])];
    await chain.apply(routes);
    routes = [...routes, route('fresh2', ['/fresh2/:zq84Alone'])];
    await chain.apply(routes);
    routes = [...routes, route('fresh3', ['/fresh3/**zq85Tail'])];
    await chain.apply(routes);
  });

  test('rejected update between accepted ones', async () => {
    const chain = new Chain();
    let routes = base(40);
    await chain.apply(routes);
    const good = routes;
    routes = [...good, route('bad', ['/s0/r0/:other'])];
    await chain.apply(routes);
    routes = [...good, route('ok', ['/ok/:zq90Fresh'])];
    await chain.apply(routes);
  });
});

function prng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x100000000;
  };
}

const WIDE_HEADS = [
  ...[...'abcdefghijklmnopqrstu'].map((letter) => `/w/${letter}x`),
  ...Array.from({ length: 30 }, (_, i) => `/h/s${i}`),
  '/h/%C3%A9',
  '/w/é',
  '/w/',
  '/h//e',
];
const WIDE_TAILS = [
  '',
  '/a',
  '/a/b',
  '/a/b/c',
  '/:p',
  '/a/:p',
  '/*rest',
  '/**rest',
  '/v:f',
  '/a/b/:p/c',
];
const METHODS = [[], ['GET'], ['POST'], ['GET', 'POST'], ['PUT']];

describe('incremental table build against a full build, small random edits of wide nodes', () => {
  for (const seed of Array.from({ length: Number(process.env.ADV_SEEDS ?? 8) }, (_, i) => i + 1)) {
    test(`random small edits, sequence ${seed}`, async () => {
      let accepted = 0;
      const random = prng(seed * 7919);
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
      let serial = 0;
      const make = (name = `g${serial++}`): Route =>
        route(
          name,
          [pick(WIDE_HEADS) + pick(WIDE_TAILS)],
          pick(METHODS),
          pick(['u1', 'u2', 'gone']),
        );
      const chain = new Chain();
      let routes = Array.from({ length: Number(process.env.ADV_ROUTES ?? 40) }, () => make());
      while (!(await chain.apply(routes)))
        routes = Array.from({ length: Number(process.env.ADV_ROUTES ?? 40) }, () => make());
      for (let step = 0; step < 40; step++) {
        const next = routes.slice();
        const edits = 1 + Math.floor(random() * 3);
        for (let e = 0; e < edits; e++) {
          const kind = random();
          const at = Math.floor(random() * next.length);
          if (kind < 0.25) next.splice(at, 0, make());
          else if (kind < 0.45 && next.length > 5) next.splice(at, 1);
          else if (kind < 0.65) next[at] = make(next[at].name);
          else if (kind < 0.75)
            next.splice(Math.floor(random() * next.length), 0, ...next.splice(at, 1));
          else if (kind < 0.85)
            next[at] = { ...next[at], upstream: next[at].upstream === 'u1' ? 'u2' : 'u1' };
          else next[at] = { ...next[at], methods: pick(METHODS) };
        }
        if (await chain.apply(next)) {
          routes = next;
          accepted++;
        }
      }
      if (process.env.ADV_VERBOSE)
        console.log(`sequence ${seed}: ${accepted} of 40 versions accepted`);
    });
  }
});

describe('incremental table build against a full build, one path shared by several routes', () => {
  test('re-added route keeps Allow list', async () => {
    const chain = new Chain();
    const filler = base(40);
    let routes = [
      route('a', ['/m'], ['GET']),
      route('b', ['/m'], ['POST']),
      route('c', ['/m'], ['PUT', 'DELETE']),
      ...filler,
    ];
    await chain.apply(routes);
    routes = [route('a', ['/m'], ['GET'], 'u2'), ...routes.slice(1)];
    await chain.apply(routes);
    routes = [routes[0], route('b', ['/m'], ['PATCH']), ...routes.slice(2)];
    await chain.apply(routes);
    routes = [routes[2], routes[0], routes[1], ...routes.slice(3)];
    await chain.apply(routes);
  });

  test('same-name routes, one changed', async () => {
    const chain = new Chain();
    const filler = base(40);
    let routes = [route('same', ['/n', '/o'], ['GET']), route('same', ['/n'], ['POST']), ...filler];
    await chain.apply(routes);
    routes = [route('same', ['/n', '/o'], ['GET'], 'u2'), routes[1], ...filler];
    await chain.apply(routes);
    routes = [routes[0], route('same', ['/o'], ['POST']), ...filler];
    await chain.apply(routes);
  });
});

describe('incremental table build against a full build, hosts coming and going', () => {
  test('only host routes added and removed', async () => {
    const chain = new Chain();
    const filler = base(40);
    let routes = [...filler, route('m', ['/s1/r1/:id'], ['GET'])];
    await chain.apply(routes);
    routes = [...routes, { ...route('h', ['/s1/r1/:id', '/only-a'], ['GET']), hosts: ['a.com'] }];
    await chain.apply(routes);
    routes = [...routes, { ...route('w', ['/s2/r2/:id', '/only-a'], []), hosts: ['*.b.com'] }];
    await chain.apply(routes);
    routes = routes.filter((item) => item.name !== 'h');
    await chain.apply(routes);
    routes = routes.filter((item) => item.name !== 'w');
    await chain.apply(routes);
    routes = [...routes, { ...route('h2', ['/s1/r1/:id'], ['GET']), hosts: ['A.COM.'] }];
    await chain.apply(routes);
  });
});
