import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { AdminClient } from '../../cli/admin-client.js';
import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor } from '../../scripts/processes.js';
import { fixtureText, type Member } from '../faults/harness.js';
import { loomctl } from '../helpers/cli.js';
import { startReplicas, type Replicas } from '../helpers/replicas.js';

async function statusOf(controlPlane: Member): Promise<StatusResponse> {
  const client = new AdminClient(controlPlane.address);
  try {
    return await client.status();
  } finally {
    client.close();
  }
}

/** Proxy id and control plane of every connected proxy a control plane lists. */
async function connected(controlPlane: Member): Promise<string[]> {
  const status = await statusOf(controlPlane);
  return status.proxies
    .filter((proxy) => proxy.connected)
    .map((proxy) => `${proxy.id}@${proxy.controlPlane.split(':').at(-1)}`);
}

describe('status across control-plane replicas', { timeout: 120_000 }, () => {
  let replicas: Replicas;

  before(async () => {
    replicas = await startReplicas();
    await replicas.ws.proxy('p1', [replicas.first.address]);
    await replicas.ws.proxy('p2', [replicas.second.address]);
  });

  after(async () => {
    await replicas.close();
  });

  test('each replica lists the proxies of both', async () => {
    const { first, second } = replicas;
    const expected = [`p1@${first.port}`, `p2@${second.port}`];
    for (const controlPlane of [first, second]) {
      await waitFor(`both proxies on ${controlPlane.name}`, 20_000, async () => {
        const listed = await connected(controlPlane);
        return listed.join() === expected.join();
      });
    }
    const table = await loomctl(first.address, ['status']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /CONTROL PLANE/);
    assert.match(table.stdout, new RegExp(`p2 .*:${second.port} +yes`));
  });

  test('apply --wait through one replica waits for the proxies of both', async () => {
    const { ws, first, upstream } = replicas;
    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b']));
    const result = await loomctl(first.address, ['apply', '-f', file, '--prune', '--wait']);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\n${ws.logs()}`);
    assert.match(result.stdout, /applied by 2 of 2 proxies/);
  });

  test('acks shared through etcd neither conflict with --if-version nor move the version', async () => {
    const { etcd, ws, first, second, upstream } = replicas;
    const before = await statusOf(first);
    // A third replica reads etcd after the acks were shared, and numbers it the same.
    const third = await ws.controlPlane('cp-c', ['--etcd', etcd.endpoint]);
    await waitFor('the third replica to serve', 10_000, async () => {
      return (await statusOf(third)).version > 0;
    });
    assert.equal((await statusOf(third)).version, before.version);

    const file = join(ws.dir, 'loom.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['a', 'b', 'c']));
    const result = await loomctl(second.address, [
      'apply',
      '-f',
      file,
      '--prune',
      '--if-version',
      String(before.version),
      '--wait',
    ]);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /applied by 2 of 2 proxies/);
    await third.process.stop();
  });

  test('concurrent applies through replicas commit', async () => {
    const { first, second } = replicas;
    const clients = [new AdminClient(first.address), new AdminClient(second.address)];
    const names = Array.from({ length: 12 }, (_, index) => `parallel-${index}`);
    try {
      const results = await Promise.allSettled(
        names.map((name, index) =>
          clients[index % 2].apply({
            routes: [],
            upstreams: [{ name, targets: [{ url: 'http://127.0.0.1:9001', weight: 1 }] }],
            prune: false,
            dryRun: false,
            includeValues: false,
          }),
        ),
      );
      assert.deepEqual(
        results.filter((result) => result.status === 'rejected'),
        [],
      );
      const stored = (await clients[0].getConfig()).upstreams.map((item) => item.name);
      for (const name of names) assert.ok(stored.includes(name), `${name} is not stored`);
    } finally {
      for (const client of clients) client.close();
    }
  });

  test('a stopped replica takes its proxies off the others', async () => {
    const { first, second } = replicas;
    await second.process.stop();
    await waitFor('p2 gone from cp-a', 10_000, async () => {
      return (await connected(first)).join() === `p1@${first.port}`;
    });
  });
});
