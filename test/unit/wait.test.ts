import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import type { AdminClient } from '../../cli/admin-client.js';
import { waitForVersion } from '../../cli/wait.js';
import { LoomError } from '../../common/errors.js';
import { ProxyStatus, type StatusResponse } from '../../proto/gen/loom/v1/admin.js';

/** A client whose status calls return `responses` in order, repeating the last one. */
function scriptedClient(responses: StatusResponse[]): AdminClient {
  let calls = 0;
  const status = async () => responses[Math.min(calls++, responses.length - 1)];
  return { status } as unknown as AdminClient;
}

function statusOf(epoch: string, ackedVersion: number): StatusResponse {
  const proxy = {
    ...ProxyStatus.fromPartial({ id: 'p1', connected: true }),
    ackedEpoch: epoch,
    ackedVersion,
  };
  return {
    version: ackedVersion,
    epoch,
    proxies: [proxy],
    versionCommittedAtMs: 0,
    controlPlane: 'cp',
    fleetError: '',
  };
}

describe('apply wait epochs', () => {
  test('brief epoch mismatch keeps waiting', async () => {
    const client = scriptedClient([statusOf('old', 4), statusOf('old', 4), statusOf('new', 7)]);

    const result = await waitForVersion(client, {
      epoch: 'new',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
      epochGraceMs: 5_000,
    });

    assert.equal(result.settled, true);
    assert.equal(result.proxies[0].state, 'applied');
  });

  test('lasting epoch mismatch fails', async () => {
    const client = scriptedClient([statusOf('other', 9)]);

    const waiting = waitForVersion(client, {
      epoch: 'new',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
      epochGraceMs: 100,
    });

    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof LoomError);
      assert.equal(error.code, 'LOOM_VERSION_CONFLICT');
      assert.match(error.message, /serves epoch other/);
      return true;
    });
  });
});

describe('apply wait reconnects', () => {
  /** Returns a status that lists proxy p1, connected or not, serving `ackedVersion` of epoch e. */
  function proxyStatus(connected: boolean, ackedVersion: number): StatusResponse {
    const status = statusOf('e', ackedVersion);
    status.proxies[0].connected = connected;
    return status;
  }

  /** A status with no proxy listed, as from a control plane that has just restarted. */
  const restarted: StatusResponse = {
    version: 7,
    epoch: 'e',
    proxies: [],
    versionCommittedAtMs: 0,
    controlPlane: 'cp',
    fleetError: '',
  };

  test('restarted control plane keeps waiting', async () => {
    const client = scriptedClient([
      proxyStatus(true, 6),
      restarted,
      restarted,
      restarted,
      proxyStatus(true, 7),
    ]);

    const result = await waitForVersion(client, {
      epoch: 'e',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
      reconnectGraceMs: 2_000,
    });

    assert.equal(result.settled, true);
    assert.deepEqual(
      result.proxies.map((proxy) => [proxy.id, proxy.state]),
      [['p1', 'applied']],
    );
    assert.deepEqual(result.disconnected, []);
  });

  test('proxy gone past grace is listed', async () => {
    const client = scriptedClient([proxyStatus(true, 6), proxyStatus(false, 6)]);
    const started = Date.now();

    const result = await waitForVersion(client, {
      epoch: 'e',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
      reconnectGraceMs: 300,
    });

    assert.equal(result.settled, true);
    assert.deepEqual(result.proxies, []);
    assert.deepEqual(
      result.disconnected.map((proxy) => [proxy.id, proxy.state]),
      [['p1', 'pending']],
    );
    assert.ok(Date.now() - started >= 300, 'the wait ended before the grace');
  });

  test('applied proxy that leaves ends wait', async () => {
    const client = scriptedClient([proxyStatus(true, 7), proxyStatus(false, 7)]);

    const result = await waitForVersion(client, {
      epoch: 'e',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
      reconnectGraceMs: 60_000,
    });

    assert.equal(result.settled, true);
    assert.equal(result.proxies[0].state, 'applied');
  });
});

describe('apply wait with several control planes', () => {
  const unreadable: StatusResponse = {
    ...statusOf('e', 7),
    fleetError: 'etcd at http://127.0.0.1:2379 is unreachable',
  };

  test('a read without the other replicas settles nothing', async () => {
    const client = scriptedClient([unreadable, unreadable, statusOf('e', 7)]);

    const result = await waitForVersion(client, {
      epoch: 'e',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 5_000,
    });

    assert.equal(result.settled, true);
    assert.equal(result.fleetError, undefined);
  });

  test('a wait that ends without the other replicas says why', async () => {
    const client = scriptedClient([unreadable]);

    const result = await waitForVersion(client, {
      epoch: 'e',
      version: 7,
      committedAtMs: 0,
      timeoutMs: 200,
    });

    assert.equal(result.settled, false);
    assert.match(result.fleetError ?? '', /unreachable/);
  });
});
