import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { buildTable } from '../../data-plane/build-table.js';
import { compareStrings } from '../../data-plane/router/route-index.js';
import { buildRouter } from '../../data-plane/router/router.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { RoutingTable } from '../../data-plane/table.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import {
  lookupAll,
  registry,
  settle,
  upstream,
  type Outcome,
  type TableRequest,
} from './table-fixtures.js';

/**
 * Differential tests of the incremental table build: every version goes through one long-lived
 * `SnapshotDecoder` and `buildTable` with `previous`, and each result is compared with a full
 * build of a fresh decode of the same bytes. The previous table must return the same results
 * as before the update.
 */

const BASE_UPSTREAMS: Upstream[] = [upstream('u1', 9), upstream('u2', 10)];

function route(
  name: string,
  paths: string[],
  methods: string[] = [],
  hosts: string[] = [],
  target = 'u1',
): Route {
  return { name, hosts, paths, methods, upstream: target };
}

/** Lists routes compactly for failure messages, leaving out the filler routes of hand cases. */
function describeRoutes(routes: readonly Route[]): string {
  const listed = routes
    .filter((item) => !/^f\d{3}$/.test(item.name))
    .map((item) => {
      const hosts = item.hosts.length === 0 ? '' : `@${item.hosts.join(',')}`;
      const methods = item.methods.length === 0 ? '*' : item.methods.join(',');
      return `${item.name}${hosts} ${methods} ${item.paths.join(' ')} -> ${item.upstream}`;
    });
  const fillers = routes.length - listed.length;
  return listed.join('; ') + (fillers === 0 ? '' : `; and ${fillers} filler routes`);
}

/** Small deterministic generator, so that requests follow from the fast-check seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x100000000;
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

const PARAM_VALUES = ['1', 'x', 'a%20b', '%2F', 'caf%C3%A9', 'v.json', 'A'];
const CATCH_ALL_VALUES = ['', 'x', 'a/b', 'a%2Fb/c', 'deep/er/path/'];
const REQUEST_HOSTS = [
  undefined,
  'a.com',
  'A.COM:8080',
  'a.com.',
  'x.a.com',
  'y.x.a.com',
  'b.com',
  'c.com',
  '[::1]:80',
];
const REQUEST_METHODS = ['GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE'];

/** Turns a path pattern into a request path that it matches, or nearly matches. */
function instantiate(pattern: string, random: () => number): string {
  const segments = pattern.split('/').slice(1);
  const out = segments.map((segment) => {
    if (segment.startsWith('*')) return pick(random, CATCH_ALL_VALUES);
    // `::` is a literal colon. Every other `:name` is a param, alone or mixed with text.
    return segment
      .replaceAll('::', '\u0000')
      .replace(/:\w+/g, () => pick(random, PARAM_VALUES))
      .replaceAll('\u0000', ':');
  });
  let path = '/' + out.join('/');
  const variant = random();
  if (variant < 0.1) path += '/';
  else if (variant < 0.2) path += '/extra';
  else if (variant < 0.25) path = path.replace('a', '%61');
  else if (variant < 0.3) path = path.toUpperCase();
  else if (variant < 0.35) path = path.replace('/', '//');
  else if (variant < 0.4) path = path.slice(0, Math.max(1, path.lastIndexOf('/')));
  else if (variant < 0.42) path = path + '/../x';
  return path;
}

/** Builds requests for the paths of every route seen so far, plus fixed ones. */
function requestsFor(routeSets: readonly Route[][], seed: number, count: number): TableRequest[] {
  const random = prng(seed);
  const patterns = [...new Set(routeSets.flat().flatMap((item) => item.paths))];
  const requests: TableRequest[] = [
    { method: 'GET', host: undefined, path: '/' },
    { method: 'GET', host: undefined, path: '*' },
    { method: 'GET', host: undefined, path: '/%zz' },
    { method: 'OPTIONS', host: 'a.com', path: '/api/v1/users/1' },
  ];
  for (let i = 0; i < count && patterns.length > 0; i++) {
    requests.push({
      method: pick(random, REQUEST_METHODS),
      host: pick(random, REQUEST_HOSTS),
      path: instantiate(pick(random, patterns), random),
    });
  }
  return requests;
}

/**
 * Feeds versions to a proxy-like chain: one decoder and the incremental build with
 * `previous`, and checks each against a full build of a fresh decode.
 */
class DifferentialChain {
  readonly #decoder = new SnapshotDecoder();
  readonly #incremental = registry();
  readonly #fresh = registry();
  #table: RoutingTable | undefined;
  #version = 0;
  readonly requests: TableRequest[];
  /** Versions that both builds accepted, and that both rejected. */
  accepted = 0;
  rejected = 0;

  constructor(requests: TableRequest[]) {
    this.requests = requests;
  }

  get table(): RoutingTable | undefined {
    return this.#table;
  }

  /** Applies one version and asserts that it agrees with a full build. */
  async apply(
    routes: Route[],
    upstreams: Upstream[] = BASE_UPSTREAMS,
    extraResponseHeaders: string[] = [],
  ): Promise<Outcome> {
    const version = ++this.#version;
    const bytes = buildSnapshot('epoch', version, routes, upstreams).encoded;
    const snapshot = this.#decoder.decode(bytes).snapshot;
    const copy = StreamResponse.decode(bytes).snapshot;
    assert.ok(snapshot !== undefined, 'the decoder returned no snapshot');
    assert.ok(copy !== undefined, 'the generated decoder returned no snapshot');

    const previous = this.#table;
    const before = previous === undefined ? undefined : lookupAll(previous, this.requests);
    const incremental = await settle(
      buildTable(snapshot, this.#incremental, { previous, extraResponseHeaders }),
    );
    const full = await settle(buildTable(copy, this.#fresh, { extraResponseHeaders }));
    const context = `version ${version}: ${describeRoutes(routes)}`;

    if (full.ok) {
      assert.ok(
        incremental.ok,
        `update rejected (${(incremental as { error: string }).error}) but a full build accepts; ${context}`,
      );
      assert.equal(incremental.table.router.size, full.table.router.size, context);
      assert.equal(incremental.table.version, version);
      const expected = lookupAll(full.table, this.requests);
      const actual = lookupAll(incremental.table, this.requests);
      for (let i = 0; i < expected.length; i++) {
        assert.deepEqual(
          actual[i],
          expected[i],
          `request ${JSON.stringify(this.requests[i])}; ${context}`,
        );
      }
      this.#table = incremental.table;
      this.accepted++;
    } else {
      assert.ok(
        !incremental.ok,
        `update accepted but a full build rejects: ${full.error}; ${context}`,
      );
      assert.equal(incremental.error, full.error, context);
      this.rejected++;
    }
    if (previous !== undefined && before !== undefined) {
      assert.deepEqual(
        lookupAll(previous, this.requests),
        before,
        `previous table changed; ${context}`,
      );
    }
    return incremental;
  }
}

// Generated route sets -------------------------------------------------------------------------

/** Prefixes that many routes share, so trees have long merged edges that changes split. */
const PREFIXES = ['', '/api/v1/users', '/api/v1/items', '/api/v2', '/a/b/c/d/e', '/%61pi/v1'];
const SEGMENTS = [
  'a',
  'b',
  'users',
  'items',
  'x',
  '',
  ':p',
  ':p',
  ':f.json',
  'v:f',
  ':f-:f',
  'me::x',
  'x%2Fy',
  'A',
];
const TAILS = ['', '', '', '/*rest', '/**rest'];
const HOST_SETS: string[][] = [
  [],
  [],
  [],
  ['a.com'],
  ['b.com'],
  ['*.a.com'],
  ['a.com', 'b.com'],
  ['A.com.'],
];
const METHOD_SETS: string[][] = [
  [],
  ['GET'],
  ['GET'],
  ['POST'],
  ['HEAD'],
  ['GET', 'POST'],
  ['PUT', 'GET', 'GET'],
];
const TARGETS = ['u1', 'u1', 'u2', 'missing'];

/** Numbers the params of a pattern so that no name repeats. */
function numberParams(path: string): string {
  let index = 0;
  return path.replace(/:(p|f)\b/g, (_, kind: string) => `:${kind}${index++}`);
}

/**
 * Children of `/w` start with different letters and of `/h` with the same one, so that wide
 * nodes get first-character buckets under `/w` and a hash table under `/h` once sealed.
 */
const BUCKETED = [...'abcdefghijkl'].map((letter) => `${letter}x`);
const HASHED = Array.from({ length: 24 }, (_, i) => `s${i}`);

const narrowPathArbitrary = fc
  .tuple(
    fc.constantFrom(...PREFIXES),
    fc.array(fc.constantFrom(...SEGMENTS), { minLength: 0, maxLength: 3 }),
    fc.constantFrom(...TAILS),
  )
  .map(([prefix, segments, tail]) => {
    const body = prefix + segments.map((segment) => '/' + segment).join('') + tail;
    return numberParams(body === '' ? '/' : body);
  });

const widePathArbitrary = fc
  .tuple(
    fc.oneof(
      fc.constantFrom(...BUCKETED).map((name) => `/w/${name}`),
      fc.constantFrom(...HASHED).map((name) => `/h/${name}`),
      fc.constantFrom(...HASHED).map((name) => `/h/${name}`),
    ),
    fc.array(fc.constantFrom('a', 'b', ':p', ''), { minLength: 0, maxLength: 2 }),
    fc.constantFrom(...TAILS),
  )
  .map(([prefix, segments, tail]) =>
    numberParams(prefix + segments.map((segment) => '/' + segment).join('') + tail),
  );

const pathArbitrary = fc.oneof(
  { arbitrary: narrowPathArbitrary, weight: 3 },
  { arbitrary: widePathArbitrary, weight: 2 },
);

interface RouteSpec {
  paths: string[];
  methods: string[];
  hosts: string[];
  upstream: string;
}

const specArbitrary: fc.Arbitrary<RouteSpec> = fc.record({
  paths: fc.array(pathArbitrary, { minLength: 1, maxLength: 2 }),
  methods: fc.constantFrom(...METHOD_SETS),
  hosts: fc.constantFrom(...HOST_SETS),
  upstream: fc.constantFrom(...TARGETS),
});

type Change =
  | { kind: 'add'; spec: RouteSpec }
  | { kind: 'remove'; pick: number }
  | { kind: 'paths'; pick: number; paths: string[] }
  | { kind: 'methods'; pick: number; methods: string[] }
  | { kind: 'hosts'; pick: number; hosts: string[] }
  | { kind: 'target'; pick: number; upstream: string }
  | { kind: 'rename'; pick: number }
  | { kind: 'reorder'; seed: number }
  | { kind: 'upstream'; port: number }
  | { kind: 'nothing' }
  | { kind: 'conflict'; pick: number }
  | { kind: 'large'; picks: number[]; paths: string[] }
  | { kind: 'duplicate-name'; pick: number; spec: RouteSpec; samePaths: boolean }
  | { kind: 'repeat'; pick: number; seed: number };

/** Index of the route a change applies to, modulo the number of routes. */
const pickArbitrary = fc.nat({ max: 1000 });

const changeArbitrary = (duplicateNames: boolean): fc.Arbitrary<Change> => {
  const changes: fc.Arbitrary<Change>[] = [
    fc.record({ kind: fc.constant('add' as const), spec: specArbitrary }),
    fc.record({ kind: fc.constant('remove' as const), pick: pickArbitrary }),
    fc.record({
      kind: fc.constant('paths' as const),
      pick: pickArbitrary,
      paths: fc.array(pathArbitrary, { minLength: 1, maxLength: 2 }),
    }),
    fc.record({
      kind: fc.constant('methods' as const),
      pick: pickArbitrary,
      methods: fc.constantFrom(...METHOD_SETS),
    }),
    fc.record({
      kind: fc.constant('hosts' as const),
      pick: pickArbitrary,
      hosts: fc.constantFrom(...HOST_SETS),
    }),
    fc.record({
      kind: fc.constant('target' as const),
      pick: pickArbitrary,
      upstream: fc.constantFrom(...TARGETS),
    }),
    fc.record({ kind: fc.constant('rename' as const), pick: pickArbitrary }),
    fc.record({ kind: fc.constant('reorder' as const), seed: fc.nat() }),
    fc.record({ kind: fc.constant('upstream' as const), port: fc.integer({ min: 11, max: 14 }) }),
    fc.record({ kind: fc.constant('nothing' as const) }),
    fc.record({ kind: fc.constant('conflict' as const), pick: pickArbitrary }),
    fc.record({
      kind: fc.constant('large' as const),
      picks: fc.array(pickArbitrary, { minLength: 4, maxLength: 10 }),
      paths: fc.array(pathArbitrary, { minLength: 4, maxLength: 10 }),
    }),
  ];
  if (duplicateNames) {
    changes.push(
      fc.record({
        kind: fc.constant('duplicate-name' as const),
        pick: pickArbitrary,
        spec: specArbitrary,
        samePaths: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('repeat' as const), pick: pickArbitrary, seed: fc.nat() }),
    );
  }
  return fc.oneof(...changes);
};

/** The control plane's state: routes sorted by name unless a change reordered them. */
interface Config {
  routes: Route[];
  upstreams: Upstream[];
}

let nameCounter = 0;

function applyChange(config: Config, change: Change): Config {
  const routes = config.routes.slice();
  let upstreams = config.upstreams;
  let sorted = true;
  const at = (pick: number) => pick % routes.length;
  const replace = (pick: number, patch: Partial<Route>) => {
    if (routes.length === 0) return;
    const i = at(pick);
    routes[i] = { ...routes[i], ...patch };
  };
  switch (change.kind) {
    case 'add':
      routes.push(
        route(
          `n${nameCounter++}`,
          change.spec.paths,
          change.spec.methods,
          change.spec.hosts,
          change.spec.upstream,
        ),
      );
      break;
    case 'remove':
      if (routes.length > 0) routes.splice(at(change.pick), 1);
      break;
    case 'paths':
      replace(change.pick, { paths: change.paths });
      break;
    case 'methods':
      replace(change.pick, { methods: change.methods });
      break;
    case 'hosts':
      replace(change.pick, { hosts: change.hosts });
      break;
    case 'target':
      replace(change.pick, { upstream: change.upstream });
      break;
    case 'rename':
      replace(change.pick, { name: `m${nameCounter++}` });
      break;
    case 'reorder': {
      const random = prng(change.seed);
      for (let i = routes.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [routes[i], routes[j]] = [routes[j], routes[i]];
      }
      sorted = false;
      break;
    }
    case 'upstream':
      upstreams = [upstream('u1', change.port), ...upstreams.slice(1)];
      break;
    case 'nothing':
      break;
    case 'conflict':
      if (routes.length > 0) routes.push({ ...routes[at(change.pick)], name: `c${nameCounter++}` });
      break;
    case 'large':
      change.picks.forEach((pick, i) =>
        replace(pick, { paths: [change.paths[i % change.paths.length]] }),
      );
      break;
    case 'repeat':
      // The same entry twice, out of order: the decoder may return one object for both.
      if (routes.length > 0) {
        routes.splice(change.seed % (routes.length + 1), 0, routes[at(change.pick)]);
        sorted = false;
      }
      break;
    case 'duplicate-name':
      if (routes.length > 0) {
        // With `samePaths`, the copy differs only in its methods, which a full build accepts
        // when the original lists methods.
        const original = routes[at(change.pick)];
        const spec = change.samePaths
          ? { ...original, methods: original.methods.length === 0 ? ['GET'] : ['PATCH'] }
          : change.spec;
        routes.push(route(original.name, spec.paths, spec.methods, spec.hosts, spec.upstream));
      }
      break;
  }
  if (sorted) routes.sort((a, b) => compareStrings(a.name, b.name));
  return { routes, upstreams };
}

function isValid(routes: Route[]): boolean {
  try {
    buildRouter(routes.map((item) => ({ ...item, value: item.name })));
    return true;
  } catch {
    return false;
  }
}

/** Drops routes until a full build accepts the set, so each sequence starts from a served table. */
function withoutConflicts(routes: Route[]): Route[] {
  let remaining = routes;
  for (;;) {
    try {
      buildRouter(remaining.map((item) => ({ ...item, value: item.name })));
      return remaining;
    } catch (error) {
      const name = /route ("(?:[^"\\]|\\.)*")/.exec((error as Error).message)?.[1];
      assert.ok(name !== undefined, String(error));
      const drop = JSON.parse(name) as string;
      remaining = remaining.filter((item) => item.name !== drop);
    }
  }
}

function initialRoutes(specs: RouteSpec[]): Route[] {
  const routes = specs.map((spec, i) =>
    route(`r${String(i).padStart(3, '0')}`, spec.paths, spec.methods, spec.hosts, spec.upstream),
  );
  return withoutConflicts(routes);
}

/**
 * Applies `versions` to the routes of `specs` and feeds each resulting configuration to a new
 * chain. With `hostless`, every route loses its hosts, so the router takes its static fast path.
 * With `repair`, routes are dropped from a version until it is valid, unless it has a change
 * meant to conflict.
 */
async function runSequence(
  specs: RouteSpec[],
  versions: Change[][],
  seed: number,
  hostless: boolean,
  repair: boolean,
): Promise<DifferentialChain> {
  const withoutHosts = (config: Config): Config =>
    hostless
      ? { ...config, routes: config.routes.map((item) => ({ ...item, hosts: [] })) }
      : config;
  const initial = initialRoutes(hostless ? specs.map((spec) => ({ ...spec, hosts: [] })) : specs);
  let config: Config = { routes: initial, upstreams: BASE_UPSTREAMS };
  const configs = [config];
  for (const changes of versions) {
    let next = config;
    for (const change of changes) next = withoutHosts(applyChange(next, change));
    if (repair && !changes.some((change) => change.kind === 'conflict')) {
      next = { ...next, routes: withoutConflicts(next.routes) };
    }
    configs.push(next);
    // After a version that the proxy rejects, the next one starts from the last valid routes,
    // as after an operator's fix, so that most versions are served.
    if (isValid(next.routes)) config = next;
  }
  const chain = new DifferentialChain(
    requestsFor(
      configs.map((item) => item.routes),
      seed,
      120,
    ),
  );
  for (const item of configs) await chain.apply(item.routes, item.upstreams);
  return chain;
}

interface SequenceOptions {
  /** Whether changes may add routes with a name or an entry already in the snapshot. */
  duplicateNames: boolean;
  numRuns: number;
  /** Minimum and maximum routes generated for the first version, before conflicts are dropped. */
  routes: [number, number];
  /** Maximum changes between two versions. */
  changes: number;
  /** Whether versions drop the routes that conflict, as `runSequence` describes. */
  repair: boolean;
}

function sequenceProperty(options: SequenceOptions): Promise<void> {
  const { duplicateNames, numRuns } = options;
  let accepted = 0;
  let rejected = 0;
  return fc
    .assert(
      fc.asyncProperty(
        fc.array(specArbitrary, { minLength: options.routes[0], maxLength: options.routes[1] }),
        fc.array(
          fc.array(changeArbitrary(duplicateNames), { minLength: 1, maxLength: options.changes }),
          { minLength: 1, maxLength: 12 },
        ),
        fc.nat(),
        fc.boolean(),
        async (specs, versions, seed, hostless) => {
          const chain = await runSequence(specs, versions, seed, hostless, options.repair);
          accepted += chain.accepted;
          rejected += chain.rejected;
        },
      ),
      // A failure of the duplicate-name property is known, and shrinking it takes minutes.
      { numRuns, endOnFailure: duplicateNames },
    )
    .then(() => {
      // The sequences must exercise both outcomes, or the property proves little.
      assert.ok(accepted > numRuns * 3, `only ${accepted} versions accepted`);
      assert.ok(rejected > 0, 'no version was rejected');
    });
}

// Tests ------------------------------------------------------------------------------------------

/** Routes that keep a one-route change under the 10 % limit, so the router is updated. */
function filler(count: number, prefix = '/fill'): Route[] {
  return Array.from({ length: count }, (_, i) =>
    route(`f${String(i).padStart(3, '0')}`, [`${prefix}/${i}/:id`], ['GET']),
  );
}

function sortByName(routes: Route[]): Route[] {
  return routes.slice().sort((a, b) => compareStrings(a.name, b.name));
}

/**
 * Applies each route set, sorted by name, to a new chain. Requests are random ones for the
 * paths of every set and of `extraPaths`, then GET and POST for each of `extraPaths` on
 * every request host.
 */
async function runVersions(
  versions: Route[][],
  extraPaths: string[] = [],
): Promise<DifferentialChain> {
  const sets = versions.concat([extraPaths.map((path, i) => route(`extra${i}`, [path]))]);
  const requests = requestsFor(sets, 7, 200);
  for (const path of extraPaths) {
    for (const host of REQUEST_HOSTS) {
      requests.push({ method: 'GET', host, path }, { method: 'POST', host, path });
    }
  }
  const chain = new DifferentialChain(requests);
  for (const routes of versions) await chain.apply(sortByName(routes));
  return chain;
}

describe('table update differential', () => {
  test('random versions match full builds', async () => {
    await sequenceProperty({
      duplicateNames: false,
      numRuns: 400,
      routes: [20, 60],
      changes: 3,
      repair: false,
    });
  });

  test('large sets with many changes', async () => {
    // Up to 10 % of 150 to 300 routes changes at once, so one update edits many paths.
    await sequenceProperty({
      duplicateNames: false,
      numRuns: 25,
      routes: [150, 300],
      changes: 12,
      repair: true,
    });
  });

  test('long merged prefixes split and merge', async () => {
    const base = filler(30);
    const deep = route('deep', ['/a/b/c/d/e/f/g'], ['GET']);
    const versions = [
      [...base, deep],
      [...base, deep, route('split', ['/a/b/c/x'], ['GET'])],
      [...base, deep, route('split', ['/a/b/c/d/e/f/:p'], ['POST'])],
      [...base, deep, route('split', ['/a/b/c'], ['GET'])],
      [...base, deep, route('split', ['/a/b/c/**rest'])],
      [...base, deep, route('split', ['/a/b/c/d/e/f/g/h'])],
      [...base, deep],
      [...base, route('deep', ['/a/b/c/d/e/f/h'], ['GET'])],
      [...base, route('deep', ['/a/b'], ['GET'])],
      [...base, route('deep', ['/a/b'], ['GET']), route('long', ['/a/b/c/d/e/f/g/h/i'])],
      [...base, route('long', ['/a/b/c/d/e/f/g/h/i'])],
    ];
    await runVersions(versions, ['/a/b/c/d/e/f/g/h/i', '/a/b/c/d/e/f', '/a/b/c/d']);
  });

  test('catch-all becomes a plain route', async () => {
    const base = filler(30);
    const versions = [
      [...base, route('files', ['/files/**rest'], ['GET']), route('file', ['/files/readme'])],
      [...base, route('files', ['/files/:name'], ['GET']), route('file', ['/files/readme'])],
      [...base, route('files', ['/files'], ['GET']), route('file', ['/files/readme'])],
      [...base, route('files', ['/files/*rest'], ['GET']), route('file', ['/files/readme'])],
      [...base, route('files', ['/**rest']), route('file', ['/files/readme'])],
      [...base, route('files', ['/']), route('file', ['/files/readme'])],
      [...base, route('files', ['/files/**rest', '/other']), route('file', ['/files/readme'])],
      [
        ...base,
        route('files', ['/files/**rest'], ['GET'], ['a.com']),
        route('file', ['/files/readme']),
      ],
    ];
    await runVersions(versions, ['/files', '/files/a/b', '/other', '/files/readme/x']);
  });

  test('route moves between hosts', async () => {
    const base = filler(30);
    const versions = [
      [...base, route('moving', ['/m/:id'], ['GET'], ['a.com'])],
      [...base, route('moving', ['/m/:id'], ['GET'], ['b.com'])],
      [...base, route('moving', ['/m/:id'], ['GET'], ['*.a.com'])],
      [...base, route('moving', ['/m/:id'], ['GET'], [])],
      [...base, route('moving', ['/m/:id'], ['GET'], ['a.com', 'b.com'])],
      [...base, route('moving', ['/m/:id'], ['POST'], ['A.com.'])],
      [...base, route('moving', ['/m/:id'], ['GET'], [])],
    ];
    await runVersions(versions);
  });

  test('last route of a host removed', async () => {
    const base = filler(30);
    const hosted = route('hosted', ['/h', '/f/:id'], ['GET'], ['a.com']);
    const wildcard = route('wild', ['/h'], [], ['*.a.com']);
    const versions = [
      [...base, hosted, wildcard],
      [...base, wildcard],
      [...base],
      [...base, hosted],
      [...base, route('hosted', ['/h'], ['GET'], [])],
      [...base],
      [...base, wildcard],
    ];
    // With hosts gone, the router serves static paths without reading the Host header.
    const chain = await runVersions(versions, ['/h', '/fill/3/x']);
    assert.equal(chain.accepted, versions.length);
  });

  test('conflict keeps previous table', async () => {
    const base = filler(30);
    const users = route('users', ['/u/:id'], ['GET']);
    const versions = [
      [...base, users],
      [...base, users, route('other', ['/u/:name'], ['GET'])],
      [...base, users, route('other', ['/u/:name'], ['POST'])],
      [...base, users, route('other', ['/u/:name'], ['POST']), route('third', ['/u/:x'])],
      [...base, users],
    ];
    const chain = await runVersions(versions);
    assert.equal(chain.rejected, 2);
    assert.equal(chain.table?.version, 5);
  });

  for (const hosts of [[], ['a.com']]) {
    test(`long run of one-route changes${hosts.length === 0 ? '' : ' on a host'}`, async () => {
      const statics = Array.from({ length: 20 }, (_, i) =>
        route(`s${String(i).padStart(2, '0')}`, [`/s/${i}`], ['GET'], hosts),
      );
      // Every tenth round restores a route's first path, and the others add a new static path.
      // The changed paths thus pass the 512 that a fork copies before folding them, twice.
      const rounds = 1200;
      const pathOf = (round: number) =>
        round % 10 === 9 ? `/s/${round % 20}` : `/s/${round % 20}/v${round}`;
      const requests: TableRequest[] = [];
      for (const host of [undefined, 'a.com']) {
        for (let i = 0; i < 20; i++) requests.push({ method: 'GET', host, path: `/s/${i}` });
        for (let round = 0; round < rounds; round += round >= rounds - 40 ? 1 : 7) {
          requests.push({ method: 'GET', host, path: pathOf(round) });
          requests.push({ method: 'HEAD', host, path: pathOf(round) });
        }
      }
      const chain = new DifferentialChain(requests);
      let current = sortByName([...filler(40), ...statics]);
      await chain.apply(current);
      for (let round = 0; round < rounds; round++) {
        const changed = statics[round % statics.length].name;
        current = current.map((item) =>
          item.name === changed ? { ...item, paths: [pathOf(round)] } : item,
        );
        await chain.apply(current);
      }
      assert.equal(chain.accepted, rounds + 1);
    });
  }

  test('wide nodes lose and regain edges', async () => {
    // The host's root and `/t/x` are wide nodes with a hash table (12 edges starting with "s"),
    // and `/t` a wide node with buckets. One change at a time stays under the 10 % limit.
    const base = filler(200);
    const hosted = Array.from({ length: 12 }, (_, i) => route(`h${i}`, [`/s${i}`], [], ['a.com']));
    const nested = Array.from({ length: 12 }, (_, i) => route(`x${i}`, [`/t/x/s${i}/end`]));
    const siblings = [...'abcdefghij'].map((letter) => route(`t${letter}`, [`/t/${letter}y`]));
    const all = [...base, ...hosted, ...nested, ...siblings];
    const without = (names: Set<string>) => all.filter((item) => !names.has(item.name));

    // Remove the hosted and nested routes one at a time, then add them back in reverse.
    const versions: Route[][] = [all];
    const removed = new Set<string>();
    for (const item of [...hosted, ...nested]) {
      removed.add(item.name);
      versions.push(without(removed));
    }
    for (const item of [...nested, ...hosted].reverse()) {
      removed.delete(item.name);
      versions.push(without(removed));
    }

    // Then larger steps, and new routes that branch off existing paths.
    versions.push(without(new Set(hosted.map((item) => item.name))));
    versions.push(all);
    versions.push(without(new Set(nested.map((item) => item.name))));
    versions.push(without(new Set(nested.slice(3).map((item) => item.name))));
    versions.push([...all, route('x0b', ['/t/x/s0/other']), route('hz', ['/s0/z'], [], ['a.com'])]);

    const extra = [
      ...[...hosted, ...nested, ...siblings].map((item) => item.paths[0]),
      '/s0/z',
      '/t/x/s0/other',
      '/t/x',
      '/t/x/s',
    ];
    const chain = await runVersions(versions, extra);
    assert.equal(chain.accepted, versions.length);
  });

  test('response header change', async () => {
    const base = filler(30);
    const chain = new DifferentialChain(requestsFor([base], 3, 40));
    await chain.apply(base, BASE_UPSTREAMS, ['x-extra', '1']);
    await chain.apply(base.slice(1), BASE_UPSTREAMS, []);
    await chain.apply(base.slice(1), BASE_UPSTREAMS, ['x-extra', '2']);
    assert.equal(chain.accepted, 3);
  });

  test('header change removing every route', async () => {
    const chain = new DifferentialChain([{ method: 'GET', host: undefined, path: '/a' }]);
    await chain.apply([route('a', ['/a'])], BASE_UPSTREAMS, ['x-extra', '1']);
    await chain.apply([], BASE_UPSTREAMS, []);
  });

  test('duplicate names at one path', async () => {
    const base = filler(30);
    const get = route('dup', ['/p'], ['GET']);
    await runVersions([
      [...base, get, route('dup', ['/p'], ['POST'])],
      [...base, get, route('dup', ['/q'], ['POST'])],
    ]);
  });

  test('duplicate names at a catch-all parent', async () => {
    const base = filler(30);
    const files = route('dup', ['/x/**rest'], ['GET']);
    await runVersions([
      [...base, files, route('dup', ['/x'], ['POST'])],
      [...base, files],
      [...base, files, route('dup', ['/x'], ['PUT', 'POST'])],
      [...base, route('dup', ['/x'], ['PUT', 'POST'])],
    ]);
  });

  test('duplicate names at different paths', async () => {
    const base = filler(30);
    const a = route('dup', ['/a/:id'], ['GET'], ['a.com']);
    await runVersions([
      [...base, a, route('dup', ['/b/:id'], ['GET'])],
      [...base, a, route('dup', ['/c/:id'], ['GET'])],
      [...base, a],
      [...base, a, route('dup', ['/a/:id'], ['GET'], ['b.com'])],
      [...base, route('dup', ['/a/:id'], ['GET'], ['b.com'])],
    ]);
  });

  test('repeated route entry rejected', async () => {
    // The second "b" has the bytes of the first: a full build rejects the pair as a conflict.
    const base = filler(30);
    const [a, b] = [route('a', ['/a'], ['GET']), route('b', ['/b'], ['GET'])];
    const chain = new DifferentialChain(requestsFor([[a, b]], 5, 20));
    await chain.apply([a, b, ...base]);
    await chain.apply([b, route('a', ['/a2'], ['GET']), b, ...base]);
    assert.equal(chain.rejected, 1);
  });

  test('random versions with duplicate names', async () => {
    await sequenceProperty({
      duplicateNames: true,
      numRuns: 150,
      routes: [20, 60],
      changes: 3,
      repair: false,
    });
  });
});
