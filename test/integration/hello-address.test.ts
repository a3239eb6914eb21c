// The traffic address in a proxy's hello, sent by a bare gRPC client to a control-plane process.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { credentials, status, type ServiceError } from '@grpc/grpc-js';

import {
  snapshotServiceClient,
  type SnapshotStreamClient,
} from '../../data-plane/snapshot-client/snapshot-client.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { findFreePort } from '../helpers/ports.js';

/** The fields of `loomctl status -o json` that these tests read. */
interface ProxyFields {
  id: string;
  address: string;
}

const NOT_HOST_PORT =
  'is not HOST:PORT such as 10.0.0.7:8080 or [::1]:8080, with a port from 0 to 65535';

const INVALID_ADDRESSES: readonly (readonly [string, string])[] = [
  ['', 'is empty'],
  [`${'a'.repeat(300)}:80`, 'has 303 characters; at most 259 are allowed'],
  ['127.0.0.1:1\u001b]0;owned\u0007', 'contains a control character'],
  ['127.0.0.1:1\u202e', NOT_HOST_PORT],
  ['10.0.0.7', NOT_HOST_PORT],
  ['10.0.0.7:65536', NOT_HOST_PORT],
  ['http://10.0.0.7:80', NOT_HOST_PORT],
  [' 10.0.0.7:80', NOT_HOST_PORT],
];

describe('proxy address in the hello', { timeout: 60_000 }, () => {
  const Client = snapshotServiceClient((bytes: Buffer) => bytes);
  let fleet: Fleet;
  let client: SnapshotStreamClient<Buffer>;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    client = new Client(fleet.controlPlane, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await fleet?.stop();
  });

  /** Opens a stream with a hello and returns the call, which the caller cancels. */
  function openStream(proxyId: string, address: string) {
    const call = client.stream();
    call.on('data', () => undefined);
    const failed = new Promise<ServiceError>((resolve) => call.on('error', resolve));
    call.write({
      kind: {
        $case: 'hello',
        hello: { proxyId, epoch: '', version: 0, address, nacked: [], instanceId: '' },
      },
    });
    return { call, failed };
  }

  async function listedProxies(): Promise<ProxyFields[]> {
    const result = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
    assert.equal(result.code, 0, result.stderr);
    return (JSON.parse(result.stdout) as { proxies: ProxyFields[] }).proxies;
  }

  test('invalid addresses rejected', async () => {
    for (const [index, [address, problem]] of INVALID_ADDRESSES.entries()) {
      const { failed } = openStream(`bad-${index}`, address);
      const error = await failed;

      assert.equal(error.code, status.INVALID_ARGUMENT, `${JSON.stringify(address)}: ${error}`);
      assert.equal(
        error.details,
        `invalid proxy address ${JSON.stringify(address.slice(0, 80))}: it ${problem}; ` +
          'start the proxy with --listen HOST:PORT such as 0.0.0.0:8080',
      );
    }

    const ids = (await listedProxies()).map((proxy) => proxy.id);
    assert.deepEqual(
      ids.filter((id) => id.startsWith('bad-')),
      [],
    );
    assert.match(fleet.logs(), /"msg":"stream rejected: invalid proxy address"/);
  });

  test('valid addresses admitted', async () => {
    const addresses = ['[::1]:8080', 'proxy-1.example:0', '10.0.0.7:65535'];
    const streams = addresses.map((address, index) => openStream(`good-${index}`, address));
    try {
      let listed: ProxyFields[] = [];
      await waitFor('three admitted proxies', 10_000, async () => {
        listed = (await listedProxies()).filter((proxy) => proxy.id.startsWith('good-'));
        return listed.length === addresses.length;
      });

      const byId = new Map(listed.map((proxy) => [proxy.id, proxy.address]));
      for (const [index, address] of addresses.entries()) {
        assert.equal(byId.get(`good-${index}`), address);
      }
    } finally {
      for (const { call } of streams) call.cancel();
    }
  });

  // --listen accepts spaces around the address, and the proxy reports it without them.
  for (const workers of [1, 2]) {
    test(`padded --listen sent trimmed, ${workers} worker(s)`, async () => {
      const port = await findFreePort();
      const id = `padded-${workers}`;
      let proxy: FleetProxy | undefined;
      try {
        proxy = await startProxy(fleet.controlPlane, fleet.dir, id, {
          extraArgs: ['--listen', ` 127.0.0.1:${port} `, '--workers', String(workers)],
        });
        let listed: ProxyFields | undefined;
        await waitFor(`${id} in the status`, 20_000, async () => {
          listed = (await listedProxies()).find((item) => item.id === id);
          return listed !== undefined;
        });

        assert.equal(listed?.address, `127.0.0.1:${port}`);
      } finally {
        await proxy?.process.stop();
      }
    });
  }
});
