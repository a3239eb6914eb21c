import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
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
});
