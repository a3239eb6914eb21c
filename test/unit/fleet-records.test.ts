import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { pino } from 'pino';

import {
  decodeSharedProxy,
  encodeSharedProxy,
  INVALID_ADDRESS,
  mergeFleet,
  SHARED_ACKS,
  sharedStatus,
  type SharedProxy,
} from '../../control-plane/fleet/fleet-records.js';
import { ProxyRegistry } from '../../control-plane/stream/proxy-registry.js';
import { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';
import { testStream } from '../helpers/proxy-stream.js';

function shared(acks: number): SharedProxy {
  return {
    controlPlane: 'cp-b:7400',
    state: {
      id: 'p1',
      address: '10.0.0.7:8080',
      connected: true,
      ackedEpoch: 'e',
      ackedVersion: 40 + acks,
      nackedEpoch: '',
      nackedVersion: 0,
      nackError: '',
      connectedAtMs: 1_000,
      lastSeenMs: 2_000,
      snapshotsSent: acks,
      fallbackVersion: 0,
      fallbackEpoch: '',
      instanceId: 'instance-1',
    },
    acks: Array.from({ length: acks }, (_, i) => ({ epoch: 'e', version: 41 + i, atMs: 100 + i })),
  };
}

function status(fields: Partial<ProxyStatus>): ProxyStatus {
  return ProxyStatus.fromPartial({ id: 'p1', ...fields });
}

describe('shared proxy records', () => {
  test('a record keeps the newest acks', () => {
    const decoded = decodeSharedProxy(encodeSharedProxy(shared(40)));
    assert.ok(decoded);
    assert.equal(decoded.acks.length, SHARED_ACKS);
    assert.equal(decoded.acks.at(-1)?.version, 80);
    assert.deepEqual(decoded.state, shared(40).state);
  });

  test('the status carries the first ack of the awaited version', () => {
    const decoded = decodeSharedProxy(encodeSharedProxy(shared(3)))!;
    const result = sharedStatus(decoded, { epoch: 'e', version: 42 });
    assert.equal(result.versionAckedAtMs, 101);
    assert.equal(result.controlPlane, 'cp-b:7400');
    assert.equal(sharedStatus(decoded, { epoch: 'other', version: 42 }).versionAckedAtMs, 0);
  });

  test('a record without instance id decodes', () => {
    const older: Partial<SharedProxy['state']> = { ...shared(1).state };
    delete older.instanceId;
    const value = JSON.stringify({ format: 1, controlPlane: 'cp-b:7400', state: older, acks: [] });
    assert.equal(decodeSharedProxy(value)?.state.instanceId, '');
  });

  test('an invalid address is marked', () => {
    for (const address of ['proxy.internal', '10.0.0.7:99999', '\u001b[2J10.0.0.7:80', '']) {
      const record = shared(1);
      const value = encodeSharedProxy({ ...record, state: { ...record.state, address } });
      const decoded = decodeSharedProxy(value);
      assert.equal(decoded?.state.address, INVALID_ADDRESS, address);
      assert.equal(decoded?.controlPlane, 'cp-b:7400');
      assert.equal(decoded?.invalidAddresses?.length, 1, address);
      assert.equal(decoded?.invalidAddresses?.[0].field, 'address');
      assert.equal(decoded?.invalidAddresses?.[0].stored, address);
      assert.ok(decoded?.invalidAddresses?.[0].problem, address);
    }
    const valid = decodeSharedProxy(encodeSharedProxy(shared(1)));
    assert.equal(valid?.state.address, '10.0.0.7:8080');
    assert.equal(valid?.controlPlane, 'cp-b:7400');
    assert.equal(valid?.invalidAddresses, undefined);
  });

  test('an invalid control plane is marked', () => {
    for (const controlPlane of ['cp-b', 'cp-b:70000', 'cp-b:7400\u001b[2J', '', 'a'.repeat(300)]) {
      const value = encodeSharedProxy({ ...shared(1), controlPlane });
      const decoded = decodeSharedProxy(value);
      assert.equal(decoded?.controlPlane, INVALID_ADDRESS, controlPlane);
      assert.equal(decoded?.state.address, '10.0.0.7:8080');
      assert.equal(decoded?.invalidAddresses?.length, 1, controlPlane);
      assert.equal(decoded?.invalidAddresses?.[0].field, 'controlPlane');
      assert.equal(decoded?.invalidAddresses?.[0].stored, controlPlane);
      assert.ok(decoded?.invalidAddresses?.[0].problem, controlPlane);
      assert.equal(sharedStatus(decoded!).controlPlane, INVALID_ADDRESS);
    }
  });

  test('both invalid addresses are listed', () => {
    const record = shared(1);
    const state = { ...record.state, address: 'proxy.internal' };
    const decoded = decodeSharedProxy(encodeSharedProxy({ ...record, controlPlane: 'cp', state }));
    assert.equal(decoded?.controlPlane, INVALID_ADDRESS);
    assert.equal(decoded?.state.address, INVALID_ADDRESS);
    const fields = decoded?.invalidAddresses?.map((invalid) => invalid.field);
    assert.deepEqual(fields, ['controlPlane', 'address']);
  });

  test('values of another shape are skipped', () => {
    const valid = JSON.parse(encodeSharedProxy(shared(1))) as Record<string, unknown>;
    for (const value of [
      'not json',
      '[]',
      JSON.stringify({ ...valid, format: 2 }),
      JSON.stringify({ ...valid, state: { ...shared(1).state, connected: 'yes' } }),
      JSON.stringify({ ...valid, state: { ...shared(1).state, ackedVersion: 'x' } }),
      JSON.stringify({ ...valid, acks: [{ epoch: 'e' }] }),
    ]) {
      assert.equal(decodeSharedProxy(value), undefined, value);
    }
  });
});

describe('fleet merge', () => {
  test('a connected stream wins over a closed one', () => {
    const closed = status({ connected: false, connectedAtMs: 9, controlPlane: 'a' });
    const open = status({ connected: true, connectedAtMs: 1, controlPlane: 'b' });
    assert.equal(mergeFleet([closed], [open])[0].controlPlane, 'b');
    assert.equal(mergeFleet([open], [closed])[0].controlPlane, 'b');
  });

  test('the later connection wins, then the later sign of life', () => {
    const early = status({ connected: true, connectedAtMs: 1, controlPlane: 'a' });
    const late = status({ connected: true, connectedAtMs: 2, controlPlane: 'b' });
    assert.equal(mergeFleet([late], [early])[0].controlPlane, 'b');

    const seen = status({ connectedAtMs: 1, lastSeenMs: 5, controlPlane: 'c' });
    const older = status({ connectedAtMs: 1, lastSeenMs: 4, controlPlane: 'd' });
    assert.equal(mergeFleet([older, seen])[0].controlPlane, 'c');
  });

  test('two connected processes of one id both stay', () => {
    const a = status({ connected: true, instanceId: 'i1', address: 'x:1', controlPlane: 'a' });
    const b = status({ connected: true, instanceId: 'i2', address: 'y:1', controlPlane: 'b' });
    const merged = mergeFleet([a], [b]);
    assert.deepEqual(merged.map((proxy) => proxy.address).sort(), ['x:1', 'y:1']);

    const closed = status({ connected: false, instanceId: 'i3', controlPlane: 'c' });
    assert.equal(mergeFleet([a], [closed]).length, 1);
  });

  test('proxies come out sorted by id', () => {
    const merged = mergeFleet([status({ id: 'p2' })], [status({ id: 'p1' }), status({ id: 'p3' })]);
    assert.deepEqual(
      merged.map((proxy) => proxy.id),
      ['p1', 'p2', 'p3'],
    );
  });
});

describe('proxy registry prune', () => {
  test('forgets only proxies disconnected past retention', () => {
    const registry = new ProxyRegistry();
    const changed: string[] = [];
    registry.onChange((id) => changed.push(id));
    const gone = testStream('10.0.0.1:8080');
    const recent = testStream('10.0.0.2:8080');
    registry.connect('gone', gone, 'e', 1);
    registry.connect('recent', recent, 'e', 1);
    registry.connect('live', testStream('10.0.0.3:8080'), 'e', 1);
    registry.disconnect('gone', gone);
    registry.disconnect('recent', recent);
    changed.length = 0;

    const now = Date.now();
    assert.equal(registry.prune(now + 1_000, 500), 2);
    assert.deepEqual(registry.ids(), ['live']);
    assert.deepEqual(changed.sort(), ['gone', 'recent']);
    assert.equal(registry.prune(now + 1_000_000, 500), 0);
  });
});

describe('proxy registry streams', () => {
  test('another process under a held id is rejected', () => {
    const registry = new ProxyRegistry();
    const holder = testStream('10.0.0.1:8080');
    assert.equal(registry.connect('p1', holder, 'e', 3).outcome, 'connected');

    const copy = testStream('10.0.0.2:8080');
    const first = registry.connect('p1', copy, 'e', 0);
    assert.equal(first.outcome, 'rejected');
    assert.equal(first.outcome === 'rejected' && first.holder, holder);
    assert.equal(first.outcome === 'rejected' && first.attempt, 1);
    const second = registry.connect('p1', copy, 'e', 0);
    assert.equal(second.outcome === 'rejected' && second.attempt, 2);

    const [row] = registry.list();
    assert.equal(row.address, '10.0.0.1:8080');
    assert.equal(row.ackedVersion, 3);
    assert.equal(row.instanceId, holder.instanceId);
  });

  test('the same process replaces its held stream', () => {
    const registry = new ProxyRegistry();
    const old = testStream('10.0.0.1:8080', 'instance-1');
    registry.connect('p1', old, 'e', 3);
    const renewed = testStream('10.0.0.1:8080', 'instance-1', '10.0.0.9');
    const outcome = registry.connect('p1', renewed, 'e', 3);
    assert.equal(outcome.outcome === 'replaced' && outcome.previous, old);

    registry.disconnect('p1', old);
    assert.equal(registry.list()[0].connected, true);
    registry.disconnect('p1', renewed);
    assert.equal(registry.list()[0].connected, false);
  });

  test('proxies without instance id match by address and peer', () => {
    const registry = new ProxyRegistry();
    registry.connect('p1', testStream('10.0.0.1:8080', ''), 'e', 1);
    const samePlace = registry.connect('p1', testStream('10.0.0.1:8080', ''), 'e', 1);
    assert.equal(samePlace.outcome, 'replaced');
    const otherPeer = testStream('10.0.0.1:8080', '', '10.0.0.7');
    assert.equal(registry.connect('p1', otherPeer, 'e', 1).outcome, 'rejected');
  });

  test('a new process starts from its hello version', () => {
    const registry = new ProxyRegistry();
    const first = testStream('10.0.0.1:8080');
    registry.connect('p1', first, 'e', 5);
    registry.ack('p1', 'e', 6);
    registry.disconnect('p1', first);

    registry.connect('p1', testStream('10.0.0.2:8080'), '', 0);
    registry.nack('p1', 'e', 6, 'build failed');
    const [row] = registry.list();
    assert.equal(row.address, '10.0.0.2:8080');
    assert.equal(row.ackedVersion, 0);
    assert.equal(row.nackedVersion, 6);
  });

  test('last nack belongs to its process', () => {
    const registry = new ProxyRegistry();
    const first = testStream('10.0.0.1:8080', 'instance-1');
    registry.connect('p1', first, 'e', 5);
    registry.nack('p1', 'e', 6, 'build failed');
    assert.deepEqual(registry.lastNack('p1', 'instance-1'), { epoch: 'e', version: 6 });
    registry.disconnect('p1', first);

    registry.connect('p1', testStream('10.0.0.1:8080', 'instance-2'), 'e', 5);
    assert.equal(registry.lastNack('p1', 'instance-2'), undefined);
    assert.deepEqual(registry.lastNack('p1'), { epoch: 'e', version: 6 });
  });

  test('last nack of proxies without instance id counts', () => {
    const registry = new ProxyRegistry();
    const first = testStream('10.0.0.1:8080', '');
    registry.connect('p1', first, 'e', 5);
    registry.nack('p1', 'e', 6, 'build failed');
    registry.disconnect('p1', first);

    registry.connect('p1', testStream('10.0.0.1:8080', 'instance-2'), 'e', 5);
    assert.deepEqual(registry.lastNack('p1', 'instance-2'), { epoch: 'e', version: 6 });
  });
  test('disconnected proxies capped, oldest dropped', () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const registry = new ProxyRegistry({ maxDisconnected: 2, logger });
    const streams = ['p1', 'p2', 'p3', 'p4', 'live'].map((id, index) => {
      const stream = testStream(`10.0.0.${index + 1}:8080`, `instance-${id}`);
      registry.connect(id, stream, 'e', 1);
      return { id, stream };
    });
    const dropped: string[] = [];
    registry.onChange((id) => {
      if (registry.entry(id) === undefined) dropped.push(id);
    });

    for (const { id, stream } of streams.slice(0, 2)) registry.disconnect(id, stream);
    assert.deepEqual(dropped, []);
    assert.equal(lines.length, 0);

    for (const { id, stream } of streams.slice(2, 4)) registry.disconnect(id, stream);
    assert.deepEqual(dropped, ['p1', 'p2']);
    assert.deepEqual(registry.ids().sort(), ['live', 'p3', 'p4']);
    assert.equal(lines.length, 1, lines.join(''));
    assert.match(lines[0], /too many disconnected proxies/);

    // A proxy that connects again leaves the disconnected ones, so nothing more is dropped.
    registry.connect('p3', testStream('10.0.0.3:8080', 'instance-p3b'), 'e', 1);
    assert.deepEqual(registry.ids().sort(), ['live', 'p3', 'p4']);
  });
});
