import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { credentials, status, type ClientDuplexStream, type StatusObject } from '@grpc/grpc-js';

import { AdminClient } from '../../cli/admin-client.js';
import { snapshotServiceClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { Hello, StreamResponse, type StreamRequest } from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { waitFor } from '../../scripts/processes.js';
import { applyUpstream } from '../helpers/admin-apply.js';
import { startEtcdFleet, type EtcdBackedFleet } from '../helpers/etcd-fleet.js';

const SnapshotStreamClient = snapshotServiceClient((bytes) => StreamResponse.decode(bytes));

/** A snapshot stream driven by the test, with what the control plane sent on it. */
interface HandStream {
  call: ClientDuplexStream<StreamRequest, StreamResponse>;
  snapshots: Snapshot[];
  /** The stream's final status, once the control plane or the client ended it. */
  ended: Promise<StatusObject>;
}

function hello(proxyId: string, fields: Partial<Hello> = {}): StreamRequest {
  const sent = Hello.fromPartial({
    proxyId,
    address: '127.0.0.1:8080',
    instanceId: `${proxyId}-instance`,
    ...fields,
  });
  return { kind: { $case: 'hello', hello: sent } };
}

describe('snapshot stream from a hostile client', { timeout: 90_000 }, () => {
  let setup: EtcdBackedFleet;
  let admin: AdminClient;
  let client: InstanceType<typeof SnapshotStreamClient>;

  before(async () => {
    setup = await startEtcdFleet({ proxies: 0 });
    admin = new AdminClient(setup.fleet.controlPlane);
    await applyUpstream(admin);
    client = new SnapshotStreamClient(setup.fleet.controlPlane, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    admin?.close();
    await setup?.stop();
  });

  function open(): HandStream {
    const call = client.stream();
    const snapshots: Snapshot[] = [];
    call.on('data', (response: StreamResponse) => {
      if (response.snapshot) snapshots.push(response.snapshot);
    });
    call.on('error', () => undefined);
    const ended = new Promise<StatusObject>((resolve) => call.on('status', resolve));
    return { call, snapshots, ended };
  }

  /** Waits for the stream's first snapshot, and fails at once with its status if it ends first. */
  async function firstSnapshot(stream: HandStream): Promise<Snapshot> {
    const endedFirst = stream.ended.then((status) => {
      if (stream.snapshots.length > 0) return;
      throw new Error(`stream ended before a snapshot: ${status.code} ${status.details}`);
    });
    await Promise.race([
      waitFor('the first snapshot', 10_000, () => stream.snapshots.length === 1),
      endedFirst,
    ]);
    return stream.snapshots[0];
  }

  function controlPlaneLog(message: string): Record<string, unknown>[] {
    const text = readFileSync(join(setup.fleet.dir, 'control-plane.log'), 'utf8');
    return text
      .split('\n')
      .filter((line) => line.includes(`"msg":"${message}"`))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  async function proxyStatus(id: string) {
    const { proxies } = await admin.status();
    return proxies.find((proxy) => proxy.id === id);
  }

  test('half-closed stream ends with OK', async () => {
    const stream = open();
    stream.call.write(hello('half-closed'));
    await firstSnapshot(stream);

    stream.call.end();
    const ended = await Promise.race([
      stream.ended,
      new Promise<undefined>((resolve) => setTimeout(resolve, 10_000, undefined)),
    ]);

    stream.call.cancel();
    assert.equal(ended?.code, status.OK, `stream still open or failed: ${ended?.details}`);
    await waitFor('the proxy listed as disconnected', 10_000, async () => {
      return (await proxyStatus('half-closed'))?.connected === false;
    });
  });

  test('nack flood logs a bounded number of lines', async () => {
    const stream = open();
    stream.call.write(hello('nack-flood'));
    const { epoch, version } = await firstSnapshot(stream);
    const error = 'x'.repeat(4_096);

    // The same version over and over, then versions the control plane never sent.
    for (let sent = 0; sent < 1_000; sent++) {
      stream.call.write({ kind: { $case: 'nack', nack: { epoch, version, hash: 'h', error } } });
    }
    const last = version + 1_000;
    for (let nacked = version + 1; nacked <= last; nacked++) {
      stream.call.write({
        kind: { $case: 'nack', nack: { epoch, version: nacked, hash: 'h', error } },
      });
    }
    await waitFor('the last nack in the status', 20_000, async () => {
      return (await proxyStatus('nack-flood'))?.nackedVersion === last;
    });

    const lines = controlPlaneLog('version nacked').filter((line) => line.proxyId === 'nack-flood');
    assert.ok(lines.length >= 1, 'no nack was logged');
    assert.ok(lines.length <= 20, `${lines.length} lines for 1,001 distinct nacks`);
    const row = await proxyStatus('nack-flood');
    assert.equal(row?.connected, true);
    assert.equal(row?.nackError.length, 1_024);
    stream.call.cancel();
  });

  test('acks of unsent versions keep version series', async () => {
    const stream = open();
    stream.call.write(hello('ack-flood'));
    const { epoch, version, hash } = await firstSnapshot(stream);

    // Versions far past any the control plane published, more than it keeps series for.
    for (let offset = 1; offset <= 50; offset++) {
      const bogus = 1_000_000_000 + offset;
      stream.call.write({ kind: { $case: 'ack', ack: { epoch, version: bogus, hash: 'h' } } });
    }
    stream.call.write({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
    await waitFor('the real ack in the status', 10_000, async () => {
      return (await proxyStatus('ack-flood'))?.ackedVersion === version;
    });

    const metrics = await fetch(`http://127.0.0.1:${setup.fleet.controlPlaneAdminPort}/metrics`);
    const text = await metrics.text();
    const series = text
      .split('\n')
      .filter((line) => line.startsWith('loom_control_plane_acks_total{'));
    assert.ok(
      series.some((line) => line.startsWith(`loom_control_plane_acks_total{version="${version}"}`)),
      series.join('\n'),
    );
    assert.ok(!series.some((line) => line.includes('"100000')), series.join('\n'));
    stream.call.cancel();
  });

  async function unsentAcks(): Promise<number> {
    const metrics = await fetch(`http://127.0.0.1:${setup.fleet.controlPlaneAdminPort}/metrics`);
    const line = (await metrics.text())
      .split('\n')
      .find((entry) => entry.startsWith('loom_control_plane_unsent_acks_total '));
    return Number(line?.split(' ')[1] ?? Number.NaN);
  }

  test('acks of unsent versions leave status', async () => {
    const before = await unsentAcks();
    const stream = open();
    stream.call.write(hello('ack-forger'));
    const { epoch, version, hash } = await firstSnapshot(stream);

    // Versions this proxy id was never sent: an older one, a newer one, and one of another epoch.
    const forged = [
      { epoch, version: version - 1, hash: 'h' },
      { epoch, version: version + 1_000, hash: 'h' },
      { epoch: `${epoch}-other`, version, hash },
    ];
    for (const ack of forged) stream.call.write({ kind: { $case: 'ack', ack } });
    await waitFor('the forged acks counted', 10_000, async () => {
      return (await unsentAcks()) === before + forged.length;
    });

    const row = await proxyStatus('ack-forger');
    assert.equal(row?.ackedVersion, 0);
    assert.equal(row?.ackedEpoch, '');
    const lines = controlPlaneLog('ack ignored: version never sent to this proxy').filter(
      (line) => line.proxyId === 'ack-forger',
    );
    assert.equal(lines.length, forged.length);
    assert.equal(lines[1].version, version + 1_000);

    // The ack of a far newer version did not stop the next version from being sent.
    const next = await applyUpstream(admin, 'ack-forger-next');
    await waitFor('the next version', 10_000, () => stream.snapshots.length === 2);
    assert.equal(stream.snapshots[1].version, next.version);
    stream.call.write({ kind: { $case: 'ack', ack: { epoch, version: next.version, hash: 'h' } } });
    await waitFor('the real ack in the status', 10_000, async () => {
      return (await proxyStatus('ack-forger'))?.ackedVersion === next.version;
    });
    stream.call.cancel();
    await stream.ended;

    // A version sent on the previous stream of the id may be acked on the next one.
    const again = open();
    again.call.write(hello('ack-forger'));
    await firstSnapshot(again);
    await waitFor('the hello version in the status', 10_000, async () => {
      return (await proxyStatus('ack-forger'))?.ackedVersion === 0;
    });
    again.call.write({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
    await waitFor('the ack from the previous stream in the status', 10_000, async () => {
      return (await proxyStatus('ack-forger'))?.ackedVersion === version;
    });
    assert.equal(await unsentAcks(), before + forged.length);
    again.call.cancel();
  });
});
