import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';

import { credentials, status, type StatusObject } from '@grpc/grpc-js';
import { pino } from 'pino';

import { AdminClient } from '../../cli/admin-client.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { snapshotServiceClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { Hello, StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { waitFor } from '../../scripts/processes.js';
import { applyUpstream } from '../helpers/admin-apply.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

const SnapshotStreamClient = snapshotServiceClient((bytes) => StreamResponse.decode(bytes));

/** Short enough for the test; the default is 30 s. */
const HELLO_TIMEOUT_MS = 1_000;
const MAX_STREAMS = 2;

describe('snapshot streams without a hello', { timeout: 60_000 }, () => {
  let etcd: EtcdProcess;
  let controlPlane: ControlPlane;
  let client: InstanceType<typeof SnapshotStreamClient>;
  let dataDir: string;
  const messages: string[] = [];

  before(async () => {
    etcd = await startEtcd();
    dataDir = mkdtempSync(join(tmpdir(), 'loom-no-hello-'));
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString().split('\n')) {
          if (line) messages.push((JSON.parse(line) as { msg: string }).msg);
        }
        done();
      },
    });
    controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [etcd.endpoint],
      dataDir,
      logger: pino({ level: 'info' }, sink),
      maxStreams: MAX_STREAMS,
      helloTimeoutMs: HELLO_TIMEOUT_MS,
    });
    const admin = new AdminClient(`127.0.0.1:${controlPlane.port}`);
    try {
      await applyUpstream(admin);
    } finally {
      admin.close();
    }
    client = new SnapshotStreamClient(
      `127.0.0.1:${controlPlane.port}`,
      credentials.createInsecure(),
    );
  });

  after(async () => {
    client?.close();
    await controlPlane?.stop();
    await etcd?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('silent streams free their slots', async () => {
    const silent = Array.from({ length: MAX_STREAMS }, () => {
      const call = client.stream();
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      return new Promise<StatusObject | undefined>((resolve) => {
        call.on('status', resolve);
        setTimeout(() => {
          call.cancel();
          resolve(undefined);
        }, HELLO_TIMEOUT_MS * 10);
      });
    });
    const ended = await Promise.all(silent);

    for (const end of ended) {
      assert.equal(end?.code, status.INVALID_ARGUMENT, `stream not ended: ${end?.details}`);
      assert.match(end.details, /sent no hello within 1000 ms/);
    }
    assert.ok(messages.includes('stream closed: no hello received'), messages.join('\n'));

    // Both slots are free again, so a proxy that sends its hello gets a snapshot.
    const call = client.stream();
    let snapshots = 0;
    call.on('data', () => (snapshots += 1));
    call.on('error', () => undefined);
    const hello = Hello.fromPartial({ proxyId: 'after-silent', address: '127.0.0.1:8080' });
    call.write({ kind: { $case: 'hello', hello } });
    await waitFor('a snapshot after the silent streams', 10_000, () => snapshots === 1);
    call.cancel();
  });
});
