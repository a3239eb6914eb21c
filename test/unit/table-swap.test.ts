import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { buildTable, prepareTable } from '../../data-plane/build-table.js';
import { DataPlane } from '../../data-plane/data-plane.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import { SnapshotFile } from '../../data-plane/snapshot-client/snapshot-file.js';
import { UpstreamRegistry } from '../../data-plane/upstreams/registry.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { parseExposition, sampleValue } from '../operations/exposition.js';

const logger = pino({ level: 'silent' });

function snapshot(
  version: number,
  routes: Snapshot['routes'],
  url = 'http://127.0.0.1:9',
): Snapshot {
  return {
    epoch: 'e1',
    version,
    hash: `h${version}`,
    routes,
    upstreams: [{ name: 'u', targets: [{ url, weight: 1 }] }],
  };
}

const route = (name: string, path: string) => ({
  name,
  hosts: [],
  paths: [path],
  methods: [],
  upstream: 'u',
});

function newDataPlane(snapshotCache?: string): DataPlane {
  return new DataPlane({
    controlPlanes: ['127.0.0.1:1'],
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    id: 'unit',
    logger,
    snapshotCache,
  });
}

/** Returns the value of `loom_proxy_requests_total` of a route, or undefined without one. */
async function requestCount(dataPlane: DataPlane, route: string): Promise<number | undefined> {
  const families = parseExposition(await dataPlane.metrics.registry.metrics());
  return sampleValue(families, 'loom_proxy_requests_total', { route });
}

describe('table swap', () => {
  test('good snapshot replaces the table', async () => {
    const dataPlane = newDataPlane();
    await dataPlane.applySnapshot(snapshot(1, [route('a', '/a')]));
    const first = dataPlane.table;
    await dataPlane.applySnapshot(snapshot(2, [route('b', '/b')]));
    const second = dataPlane.table;

    assert.notEqual(first, second);
    assert.equal(second?.version, 2);
    assert.equal(second?.router.find('GET', 'x', '/b').kind, 'found');
    assert.equal(second?.router.find('GET', 'x', '/a').kind, 'not-found');
    // The old table is immutable: a request that started on it still sees /a.
    assert.equal(first?.router.find('GET', 'x', '/a').kind, 'found');
    await dataPlane.stop().catch(() => {});
  });

  test('conflicting routes keep the old table', async () => {
    const dataPlane = newDataPlane();
    await dataPlane.applySnapshot(snapshot(1, [route('a', '/a')]));
    const before = dataPlane.table;

    await assert.rejects(
      dataPlane.applySnapshot(snapshot(2, [route('x', '/u/:id'), route('y', '/u/:name')])),
      /"x"[\s\S]*"y"|"y"[\s\S]*"x"/,
    );
    assert.equal(dataPlane.table, before);
  });

  test('invalid target URL keeps the old table', async () => {
    const dataPlane = newDataPlane();
    await dataPlane.applySnapshot(snapshot(1, [route('a', '/a')]));
    const before = dataPlane.table;

    await assert.rejects(
      dataPlane.applySnapshot(snapshot(2, [route('a', '/a')], 'ftp://x')),
      /ftp/,
    );
    assert.equal(dataPlane.table, before);
    assert.equal(before?.router.find('GET', undefined, '/a').kind, 'found');
  });

  test('large build yields to event loop', async () => {
    const routes = Array.from({ length: 20_000 }, (_, i) => route(`r${i}`, `/s${i}/:id`));
    let turns = 0;
    let building = true;
    const tick = (): void => {
      turns++;
      if (building) setImmediate(tick);
    };
    setImmediate(tick);
    const prepared = await prepareTable(snapshot(1, routes), { sliceMs: 1 });
    building = false;
    // A build that never yielded would let the chain run once at most.
    assert.ok(turns > 1, `the event loop turned ${turns} times`);
    assert.equal(prepared.router.size, 20_000);
  });

  test('metrics follow route renames', async () => {
    const dataPlane = newDataPlane();
    const unchanged = route('a', '/a');
    // The same upstream objects throughout, as the snapshot decoder returns them.
    const { upstreams } = snapshot(1, []);
    const withRoutes = (version: number, routes: Snapshot['routes']) => ({
      ...snapshot(version, routes),
      upstreams,
    });
    await dataPlane.applySnapshot(withRoutes(1, [unchanged, route('b', '/b')]));
    dataPlane.metrics.requests.observe('a', 'GET', 200, 0.01);
    dataPlane.metrics.requests.observe('b', 'GET', 200, 0.01);

    // A new object with the same name keeps the series.
    await dataPlane.applySnapshot(withRoutes(2, [unchanged, route('b', '/b2')]));
    assert.equal(await requestCount(dataPlane, 'b'), 1);

    // A rename in place drops the series of the old name.
    await dataPlane.applySnapshot(withRoutes(3, [unchanged, route('c', '/b2')]));
    assert.equal(await requestCount(dataPlane, 'b'), undefined);
    assert.equal(await requestCount(dataPlane, 'a'), 1);
    await dataPlane.stop();
  });

  test('metrics follow decoded renames', async () => {
    const dataPlane = newDataPlane();
    const decoder = new SnapshotDecoder();
    const upstreams = [{ name: 'u', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] }];
    const apply = async (version: number, routes: Snapshot['routes']) => {
      const bytes = buildSnapshot('e1', version, routes, upstreams).encoded;
      await dataPlane.applySnapshot(decoder.decode(bytes).snapshot!);
    };
    await apply(1, [route('a', '/a'), route('b', '/b')]);
    dataPlane.metrics.requests.observe('b', 'GET', 200, 0.01);

    await apply(2, [route('a', '/a'), route('b', '/b2')]);
    assert.equal(await requestCount(dataPlane, 'b'), 1);

    await apply(3, [route('a', '/a'), route('c', '/b2')]);
    assert.equal(await requestCount(dataPlane, 'b'), undefined);
    await dataPlane.stop();
  });

  test('snapshot cache saves decoded bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-table-swap-'));
    const path = join(dir, 'snapshot.json');
    const dataPlane = newDataPlane(path);
    const decoder = new SnapshotDecoder();
    const routes = [route('a', '/a'), route('b', '/b')];
    const upstreams = [{ name: 'u', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] }];
    const decoded = decoder.decode(buildSnapshot('e1', 4, routes, upstreams).encoded).snapshot!;

    const encode = Snapshot.encode;
    Snapshot.encode = () => {
      throw new Error('the snapshot was encoded again');
    };
    try {
      await dataPlane.applySnapshot(decoded);
    } finally {
      Snapshot.encode = encode;
    }
    const file = new SnapshotFile(path, logger);
    let loaded: Snapshot | undefined;
    for (let attempt = 0; attempt < 100 && loaded === undefined; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      loaded = (await file.load(60_000))?.snapshot;
    }
    assert.deepEqual(loaded, decoded);
    await dataPlane.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('route actions kept per route', async () => {
    const upstreams = new UpstreamRegistry();
    const table = await buildTable(
      snapshot(1, [
        route('plain-a', '/a'),
        route('plain-b', '/b'),
        { ...route('strip', '/c/**'), stripPrefix: '/c' },
      ]),
      upstreams,
      { extraResponseHeaders: ['x-extra', '1'] },
    );
    const bindings = ['/a', '/b', '/c/x'].map((path) => {
      const match = table.router.find('GET', undefined, path);
      assert.equal(match.kind, 'found', path);
      return match.kind === 'found' ? match.value : assert.fail(path);
    });
    assert.equal(bindings[0].actions.stripPrefix, '');
    assert.equal(bindings[2].actions.stripPrefix, '/c');
    for (const binding of bindings) {
      assert.deepEqual(binding.actions.responseSet, ['x-extra', '1']);
      assert.notEqual(binding.balancer, undefined, binding.route.name);
    }
    await upstreams.close();
  });
});
