import assert from 'node:assert/strict';
import { createServer, type Http2Server } from 'node:http2';
import { after, before, describe, test } from 'node:test';

import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

const HINT =
  'Is "loom control-plane" running there? Set --control-plane or LOOM_CONTROL_PLANE\n' +
  'to its gRPC address (its --listen, default 127.0.0.1:7400), not its HTTP\n' +
  '--admin-listen port.\n';

describe('loomctl at a server that is not a control plane', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let http2: Http2Server;
  let http2Address: string;

  before(async () => {
    etcd = await startEtcd();
    // An HTTP/2 server that responds to every stream with 404 plays a proxy or a load balancer.
    http2 = createServer((_, response) => {
      response.writeHead(404);
      response.end('not found\n');
    });
    await new Promise<void>((resolve) => http2.listen(0, '127.0.0.1', resolve));
    http2Address = `127.0.0.1:${(http2.address() as { port: number }).port}`;
  });
  after(async () => {
    await etcd?.stop();
    await new Promise((resolve) => http2?.close(resolve));
  });

  test('etcd port gets port hint', async () => {
    const address = `127.0.0.1:${etcd.clientPort}`;
    const result = await loomctl(address, ['status']);

    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr,
      `error: the server at ${address} is not a Loom control plane: ` +
        `UNIMPLEMENTED: unknown service loom.v1.AdminService\n${HINT}`,
    );
    assert.equal(result.stdout, '');
    const hintLines = result.stderr.split('\n').slice(1);
    assert.deepEqual(
      hintLines.filter((line) => line.length > 80),
      [],
    );
  });

  test('HTTP/2 404 gets port hint', async () => {
    const result = await loomctl(http2Address, ['get']);

    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr,
      `error: the server at ${http2Address} is not a Loom control plane: ` +
        `UNIMPLEMENTED: Received HTTP status code 404\n${HINT}`,
    );
  });
});
