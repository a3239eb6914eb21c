import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttp2Server, type Http2Server } from 'node:http2';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { AdminClient } from '../../cli/admin-client.js';
import { ROOT, waitFor } from '../../scripts/processes.js';
import { loomctl, type CliResult } from '../helpers/cli.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';
import { TcpRelay } from './relay.js';

const QUICKSTART = join(ROOT, 'examples', 'quickstart.yaml');

/** Delay of each chunk through the relay: the window in which the reply of a write is held. */
const RELAY_DELAY_MS = 2_000;

describe('loomctl connection lost during a write', { timeout: 180_000 }, () => {
  let fleet: Fleet;
  let admin: AdminClient;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    admin = new AdminClient(fleet.controlPlane);
  });
  after(async () => {
    admin.close();
    await fleet.stop();
  });

  /**
   * Sends `args` through a slow relay, waits until the control plane has written a version after
   * `before`, then closes the connection (`cut`, a FIN) or resets it (`reset`, a TCP RST) while
   * the reply is still held in the relay.
   */
  async function cutAfterWrite(args: string[], close: 'cut' | 'reset'): Promise<CliResult> {
    const before = (await admin.getConfig()).version;
    const relay = await TcpRelay.start(Number(fleet.controlPlane.split(':')[1]));
    try {
      relay.slow(RELAY_DELAY_MS);
      // The command runs while the test watches the store.
      const result = loomctl(relay.address, args);
      await waitFor('the write to be stored', 40_000, async () => {
        return (await admin.getConfig()).version > before;
      });
      if (close === 'cut') relay.cut();
      else relay.reset();
      return await result;
    } finally {
      await relay.close();
    }
  }

  test('apply whose reply is lost', async () => {
    const result = await cutAfterWrite(['apply', '-f', QUICKSTART], 'cut');

    assert.equal(result.code, 1, result.stderr);
    assert.ok(
      result.stderr.startsWith(`error: the connection to the control plane at 127.0.0.1:`),
      result.stderr,
    );
    assert.match(result.stderr, / was lost during the apply: Connection dropped\n/);
    assert.ok(
      result.stderr.includes(
        'The control plane may have stopped or restarted; it may have written the apply before ' +
          'that, or not; run "loomctl diff" with the same -f files to see whether it was written.',
      ),
      result.stderr,
    );
    assert.doesNotMatch(result.stderr, /--admin-listen/);
    const diff = await loomctl(fleet.controlPlane, ['diff', '-f', QUICKSTART]);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
  });

  test('delete whose reply is lost', async () => {
    const result = await cutAfterWrite(['delete', 'route', 'echo'], 'reset');

    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, / was lost during the delete: read ECONNRESET\n/);
    assert.ok(
      result.stderr.includes('run "loomctl get route echo" to see whether it still exists.'),
      result.stderr,
    );
    const get = await loomctl(fleet.controlPlane, ['get', 'route', 'echo']);
    assert.equal(get.code, 1, get.stdout);
  });
});

describe('loomctl connection lost before a write', { timeout: 60_000 }, () => {
  let dir: string;
  let server: Http2Server;
  let address: string;
  /** Paths of the gRPC requests that reached the server, such as /loom.v1.AdminService/Apply. */
  const paths: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-connection-lost-'));
    // The server acts as a control plane that stops when a read arrives. It destroys the TCP
    // connection of every request, so no response ever arrives.
    const sockets = new Set<Socket>();
    server = createHttp2Server();
    server.on('connection', (socket: Socket) => sockets.add(socket));
    server.on('stream', (_stream, headers) => {
      paths.push(String(headers[':path']));
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  test('prune whose read is lost', async () => {
    const empty = join(dir, 'empty.yaml');
    writeFileSync(empty, 'routes: []\nupstreams: []\n');
    const result = await loomctl(address, ['apply', '--prune', '-f', empty]);

    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(paths, ['/loom.v1.AdminService/GetConfig']);
    assert.match(
      result.stderr,
      /^error: the connection to the control plane at 127\.0\.0\.1:\d+ was lost before the apply was sent: /m,
    );
    assert.ok(
      result.stderr.includes(
        'The control plane may have stopped or restarted; nothing was written. Run the command ' +
          'again once it answers.',
      ),
      result.stderr,
    );
    assert.doesNotMatch(result.stderr, /may have written/);
    assert.equal(result.stdout, '');
  });
});
