import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import {
  fixtureText,
  logLines,
  readyz,
  startUpstream,
  waitForVersion,
  Workspace,
  type Member,
} from '../faults/harness.js';
import { loomctl } from '../helpers/cli.js';
import { fleetStatus, proxyRows } from '../helpers/fleet-status.js';
import { startReplicas, type Replicas } from '../helpers/replicas.js';
import { sampleValue, scrape } from '../operations/exposition.js';

const REJECTED = 'stream rejected: duplicate proxy id';
const PROXY_REJECTED = 'control plane rejected the proxy id';

/** Returns the control plane's count of rejected duplicate-id streams, by holder label. */
async function duplicateRejections(controlPlane: Member): Promise<Record<string, number>> {
  const families = await scrape(`http://127.0.0.1:${controlPlane.adminPort}/metrics`);
  const name = 'loom_control_plane_duplicate_proxy_id_rejections_total';
  assert.equal(families.get(name)?.type, 'counter');
  return {
    this_replica: sampleValue(families, name, { holder: 'this_replica' }) ?? -1,
    other_replica: sampleValue(families, name, { holder: 'other_replica' }) ?? -1,
  };
}

async function statusOf(controlPlane: Member): Promise<StatusResponse> {
  return fleetStatus(controlPlane.address);
}

async function rowsOf(controlPlane: Member, id: string): Promise<ProxyStatus[]> {
  return proxyRows(controlPlane.address, id);
}

describe('duplicate proxy id on one control plane', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cp: Member;
  let original: Member;
  let copy: Member;

  before(async () => {
    upstream = await startUpstream('echo');
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    original = await ws.proxy('p1', [cp.address]);
    const file = join(ws.dir, 'base.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['base']));
    const applied = await loomctl(cp.address, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
  });

  after(async () => {
    await ws.close();
    upstream.server.close();
  });

  test('second process is rejected', async () => {
    copy = await ws.proxy('p1-copy', [cp.address], ['--id', 'p1'], {
      LOOM_FAULT_REJECT_ROUTE: 'dupt2',
    });
    await waitFor('the copy to be rejected twice', 20_000, async () => {
      return logLines(copy, 'control plane lost, reconnecting').length >= 2;
    });

    const proxyErrors = logLines(copy, PROXY_REJECTED);
    assert.equal(proxyErrors.length, 1, ws.logs());
    const reason = String(proxyErrors[0].reason);
    assert.match(reason, /proxy id "p1" is already connected from/);
    assert.ok(reason.includes(original.address), reason);
    assert.match(reason, /give each proxy a unique --id, or omit --id/);

    const warnings = logLines(cp, REJECTED).filter((line) => line.level === 40);
    assert.equal(warnings.length, 1, ws.logs());
    assert.equal(warnings[0].heldBy, original.address);
    assert.equal(warnings[0].address, copy.address);

    const rows = await rowsOf(cp, 'p1');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].address, original.address);
    assert.equal(rows[0].connected, true);
    const ready = await readyz(copy.adminPort);
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, 'not_ready');
    const readyReason = String(ready.body.reason);
    assert.match(readyReason, /the control plane rejected the stream/);
    assert.match(readyReason, /proxy id "p1" is already connected from/);
    assert.ok(readyReason.includes(original.address), readyReason);

    // The copy retries, so the count is at least the two rejections waited for.
    const rejections = await duplicateRejections(cp);
    assert.ok(rejections.this_replica >= 2, JSON.stringify(rejections));
    assert.equal(rejections.other_replica, 0);
  });

  test('apply --wait counts only the holder', async () => {
    const file = join(ws.dir, 'dupt2.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['base', 'dupt2']));
    const applied = await loomctl(cp.address, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
    assert.match(applied.stdout, /applied by 1 of 1 proxies/);

    const [row] = await rowsOf(cp, 'p1');
    assert.equal(row.address, original.address);
    assert.equal(row.nackedVersion, 0);
    assert.equal(row.ackedVersion, (await statusOf(cp)).version);
  });

  test('copy takes the id after the holder stops', async () => {
    await original.process.stop();
    const version = (await statusOf(cp)).version;
    await waitFor('the copy to connect as p1 and nack', 20_000, async () => {
      const [row] = await rowsOf(cp, 'p1');
      return row?.connected === true && row.address === copy.address && row.nackedVersion > 0;
    });

    const [row] = await rowsOf(cp, 'p1');
    assert.equal(row.nackedVersion, version);
    assert.notEqual(row.ackedVersion, version);
    // The copy streams now, so its readiness no longer names the rejection.
    const ready = await readyz(copy.adminPort);
    assert.equal(ready.status, 503);
    assert.equal(ready.body.reason, 'no snapshot applied yet');
    const file = join(ws.dir, 'dupt2.yaml');
    const waited = await loomctl(cp.address, ['apply', '-f', file, '--wait']);
    assert.notEqual(waited.code, 0, waited.stdout + waited.stderr);
    assert.match(waited.stderr, /proxy p1 nacked version/);
  });

  test('stopped holder shows disconnected', async () => {
    await copy.process.stop();
    await waitFor('p1 to show disconnected', 10_000, async () => {
      const [row] = await rowsOf(cp, 'p1');
      return row?.connected === false;
    });
    const [row] = await rowsOf(cp, 'p1');
    assert.equal(row.address, copy.address);
  });

  test('restarted proxy with the same id reconnects', async () => {
    const restarted = await ws.proxy('p1-restarted', [cp.address], ['--id', 'p1']);
    const version = (await statusOf(cp)).version;
    await waitFor('the restarted proxy to ack', 20_000, async () => {
      const [row] = await rowsOf(cp, 'p1');
      return row?.connected === true && row.ackedVersion === version;
    });
    const [row] = await rowsOf(cp, 'p1');
    assert.equal(row.address, restarted.address);
    assert.equal(logLines(restarted, PROXY_REJECTED).length, 0);
    const table = await loomctl(cp.address, ['status']);
    assert.match(table.stdout, /since superseded/);
  });
});

describe('duplicate proxy id with a snapshot cache', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;

  before(async () => {
    upstream = await startUpstream('echo');
    ws = new Workspace();
  });

  after(async () => {
    await ws.close();
    upstream.server.close();
  });

  test('cached copy stays ready and names the holder', async () => {
    const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    const holder = await ws.proxy('p1', [cp.address]);
    const cache = ['--snapshot-cache', join(ws.dir, 'cache.json')];
    const seed = await ws.proxy('seed', [cp.address], cache);
    const file = join(ws.dir, 'base.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['base']));
    const applied = await loomctl(cp.address, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
    const version = (await statusOf(cp)).version;
    // Stopping flushes the cache file, so the copy starts from this version.
    assert.equal(await seed.process.stop(), 0);

    const copy = await ws.proxy('p1-copy', [cp.address], ['--id', 'p1', ...cache]);
    await waitFor('the copy to be rejected', 20_000, async () => {
      return logLines(copy, PROXY_REJECTED).length === 1;
    });
    await waitForVersion(copy.adminPort, version);

    const ready = await readyz(copy.adminPort);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.status, 'ready');
    assert.equal(ready.body.source, 'snapshot-cache');
    assert.equal(ready.body.version, version);
    const reason = String(ready.body.reason);
    assert.match(reason, /the control plane rejected the stream/);
    assert.match(reason, /proxy id "p1" is already connected from/);
    assert.ok(reason.includes(holder.address), reason);
    const served = await fetch(`http://${copy.address}/base/x`);
    assert.equal(served.status, 200);

    const [row] = await rowsOf(cp, 'p1');
    assert.equal(row.address, holder.address);
    assert.equal(row.connected, true);
  });
});

describe('duplicate proxy id across replicas', { timeout: 120_000 }, () => {
  let replicas: Replicas;
  let original: Member;

  before(async () => {
    replicas = await startReplicas();
    original = await replicas.ws.proxy('p1', [replicas.first.address]);
    await waitFor('p1 to be shared with cp-b', 20_000, async () => {
      const rows = await rowsOf(replicas.second, 'p1');
      return rows.length === 1 && rows[0].connected;
    });
  });

  after(async () => {
    await replicas.close();
  });

  test('second replica rejects the copy', async () => {
    const { ws, first, second, upstream } = replicas;
    const copy = await ws.proxy('p1-copy', [second.address], ['--id', 'p1'], {
      LOOM_FAULT_REJECT_ROUTE: 'dupt2',
    });
    await waitFor('the copy to be rejected', 20_000, async () => {
      return logLines(copy, PROXY_REJECTED).length === 1;
    });
    const reason = String(logLines(copy, PROXY_REJECTED)[0].reason);
    assert.ok(reason.includes(original.address), reason);
    assert.match(reason, /through control plane .*:\d+/);
    await waitFor('the copy to retry', 20_000, async () => {
      return logLines(copy, 'control plane lost, reconnecting').length >= 2;
    });
    const warnings = logLines(second, REJECTED).filter((line) => line.level === 40);
    assert.equal(warnings.length, 1, ws.logs());
    const rejections = await duplicateRejections(second);
    assert.ok(rejections.other_replica >= 2, JSON.stringify(rejections));
    assert.equal(rejections.this_replica, 0);
    assert.deepEqual(await duplicateRejections(first), { this_replica: 0, other_replica: 0 });

    const file = join(ws.dir, 'dupt2.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['dupt2']));
    const applied = await loomctl(second.address, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
    assert.match(applied.stdout, /applied by 1 of 1 proxies/);
    for (const controlPlane of [first, second]) {
      const rows = await rowsOf(controlPlane, 'p1');
      assert.equal(rows.length, 1, controlPlane.name);
      assert.equal(rows[0].address, original.address, controlPlane.name);
      assert.equal(rows[0].nackedVersion, 0, controlPlane.name);
    }
  });
});

describe('duplicate proxy id with a frozen etcd', { timeout: 120_000 }, () => {
  let replicas: Replicas;

  before(async () => {
    replicas = await startReplicas();
  });

  after(async () => {
    replicas.etcd.thaw();
    await replicas.close();
  });

  test('new proxy connects while etcd is frozen', async () => {
    const { ws, first, etcd } = replicas;
    await waitFor('cp-a to be ready', 20_000, async () => {
      return (await readyz(first.adminPort)).status === 200;
    });
    // The check of the shared records waits at most 1 s, well within the proxy's 4 s limit.
    etcd.freeze();
    try {
      const proxy = await ws.proxy('p-frozen', [first.address], ['--control-plane-timeout', '4s']);
      await waitFor('p-frozen to apply a snapshot', 30_000, async () => {
        return (await readyz(proxy.adminPort)).status === 200;
      });
      assert.deepEqual(logLines(proxy, 'control plane lost, reconnecting'), [], ws.logs());
      const rows = await rowsOf(first, 'p-frozen');
      assert.equal(rows.length, 1);
      assert.equal(rows[0].connected, true);
    } finally {
      etcd.thaw();
    }
  });
});
