import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { pino } from 'pino';

import { buildTable, prepareTable } from '../../data-plane/build-table.js';
import { DataPlane } from '../../data-plane/data-plane.js';
import { UpstreamRegistry } from '../../data-plane/upstreams/registry.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

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

function newDataPlane(): DataPlane {
  return new DataPlane({
    controlPlanes: ['127.0.0.1:1'],
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    id: 'unit',
    logger,
  });
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
