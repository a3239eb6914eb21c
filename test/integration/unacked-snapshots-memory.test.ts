import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { pino } from 'pino';

import { AdminClient } from '../../cli/admin-client.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { PENDING_SNAPSHOT_MAX } from '../../control-plane/stream/accepted-snapshot.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

const ROUTES = 3_000;
/** More applies than the control plane keeps unacked snapshots, so the list reaches its bound. */
const APPLIES = PENDING_SNAPSHOT_MAX + 4;
/**
 * Heap growth allowed after the applies, in bytes. On a 2-core Linux machine with Node 20, the
 * heap grew by 96 MiB while the control plane kept the decoded routes of every unacked snapshot,
 * and by 4 MiB with their encoded bytes only.
 */
const MAX_GROWTH_BYTES = 40 * 1024 * 1024;

/** Returns the used heap after two full garbage collections. */
function collectedHeapBytes(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

function routes(generation: number): Route[] {
  return Array.from({ length: ROUTES }, (_, index) => ({
    name: `r${index}`,
    hosts: [],
    paths: [`/g${generation}/r${index}/*rest`],
    methods: [],
    upstream: 'users',
  }));
}

describe('snapshots no proxy acked', { timeout: 240_000 }, () => {
  let etcd: EtcdProcess;
  let controlPlane: ControlPlane;
  let admin: AdminClient;
  let dataDir: string;

  before(async () => {
    etcd = await startEtcd({ extraArgs: ['--max-txn-ops=10000'] });
    dataDir = mkdtempSync(join(tmpdir(), 'loom-unacked-'));
    controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [etcd.endpoint],
      dataDir,
      logger: pino({ level: 'silent' }),
    });
    admin = new AdminClient(`127.0.0.1:${controlPlane.port}`);
  });

  after(async () => {
    admin?.close();
    await controlPlane?.stop();
    await etcd?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('keep encoded bytes, not routes', async () => {
    const upstreams = [{ name: 'users', targets: [{ url: 'http://127.0.0.1:9001', weight: 1 }] }];
    const apply = (generation: number) =>
      admin.apply({
        routes: routes(generation),
        upstreams,
        prune: false,
        dryRun: false,
        includeValues: false,
      });
    await apply(0);
    const before = collectedHeapBytes();

    for (let generation = 1; generation <= APPLIES; generation++) {
      const response = await apply(generation);
      assert.equal(response.committed, true, `apply ${generation} changed nothing`);
    }
    const growth = collectedHeapBytes() - before;

    const growthMiB = (growth / 1024 / 1024).toFixed(1);
    assert.ok(growth < MAX_GROWTH_BYTES, `heap grew by ${growthMiB} MiB over ${APPLIES} applies`);
  });
});
