import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import { fixtureText, readyz, startUpstream, Workspace, type Member } from '../faults/harness.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

const REJECTED = 'stream rejected: duplicate proxy id';
const PROXY_REJECTED = 'control plane rejected the proxy id';

async function statusOf(controlPlane: Member): Promise<StatusResponse> {
  const result = await loomctl(controlPlane.address, ['status', '-o', 'json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as StatusResponse;
}

async function rowsOf(controlPlane: Member, id: string): Promise<ProxyStatus[]> {
  return (await statusOf(controlPlane)).proxies.filter((proxy) => proxy.id === id);
}

/** Parsed pino lines of a log file whose message is `msg`. */
function logLines(member: Member, msg: string): Record<string, unknown>[] {
  return readFileSync(member.logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(msg))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === msg || String(line.msg).startsWith(msg));
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
    assert.notEqual((await readyz(copy.adminPort)).status, 200);
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

describe('duplicate proxy id across replicas', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let first: Member;
  let second: Member;
  let original: Member;

  before(async () => {
    etcd = await startEtcd();
    upstream = await startUpstream('echo');
    ws = new Workspace();
    first = await ws.controlPlane('cp-a', ['--etcd', etcd.endpoint]);
    second = await ws.controlPlane('cp-b', ['--etcd', etcd.endpoint]);
    original = await ws.proxy('p1', [first.address]);
    await waitFor('p1 to be shared with cp-b', 20_000, async () => {
      const rows = await rowsOf(second, 'p1');
      return rows.length === 1 && rows[0].connected;
    });
  });

  after(async () => {
    await ws.close();
    upstream.server.close();
    await etcd.stop();
  });

  test('second replica rejects the copy', async () => {
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
