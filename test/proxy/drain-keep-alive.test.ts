import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { afterEach, beforeEach, describe, it } from 'node:test';

import { HttpDrainer, type DrainGrace } from '../../data-plane/lifecycle/drain.js';
import {
  eventually,
  openRawClient,
  startHttpServer,
  startProxy,
  waitForText,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

const KEEP_ALIVE_GET = 'GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n';

describe('drain of a proxy under keep-alive', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  let received = 0;

  beforeEach(async () => {
    received = 0;
    upstream = await startHttpServer((req, res) => {
      received++;
      req.resume();
      res.end('ok');
    });
    proxy = await startProxy();
    proxy.publishOne('app', upstream.port);
  });

  afterEach(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('answers a request on an idle connection', async () => {
    const drainer = new HttpDrainer(proxy.server, proxy.logger, { idleMs: 5_000 });
    const client = openRawClient(proxy.port, KEEP_ALIVE_GET);
    await waitForText(client.text, /\r\n\r\nok$/);

    const drained = drainer.drain(10_000);
    client.socket.write(KEEP_ALIVE_GET);
    await within(client.closed, 'the proxy to close the connection after its response');
    const result = await within(drained, 'the drain');

    const responses = client.text().split('HTTP/1.1 ').slice(1);
    assert.equal(responses.length, 2);
    assert.match(responses[1], /^200 OK\r\n/);
    assert.match(responses[1], /\r\nconnection: close\r\n/i);
    assert.equal(client.error(), undefined);
    assert.equal(received, 2);
    assert.deepEqual(result, { completed: true, abandoned: 0 });
  });

  it('closes idle connections after the grace period', async () => {
    const drainer = new HttpDrainer(proxy.server, proxy.logger, { idleMs: 100 });
    const client = openRawClient(proxy.port, KEEP_ALIVE_GET);
    await waitForText(client.text, /\r\n\r\nok$/);

    const result = await within(drainer.drain(10_000), 'the drain');
    await within(client.closed, 'the idle connection to close');

    assert.deepEqual(result, { completed: true, abandoned: 0 });
    assert.equal(client.text().split('HTTP/1.1 ').length, 2);
    const graceEnd = proxy.logs.find((line) => line.msg.startsWith('drain grace period ended'));
    assert.ok(graceEnd, 'the end of the grace period is logged');
    assert.equal(graceEnd.idle, 1);
  });

  it('drains a grace of 0 at once', async () => {
    const drainer = new HttpDrainer(proxy.server, proxy.logger, { idleMs: 0 });
    const client = openRawClient(proxy.port, KEEP_ALIVE_GET);
    await waitForText(client.text, /\r\n\r\nok$/);

    const result = await within(drainer.drain(10_000), 'the drain');
    await within(client.closed, 'the idle connection to close');

    assert.deepEqual(result, { completed: true, abandoned: 0 });
  });

  it('rejects an invalid grace period', () => {
    const invalid = (grace: DrainGrace) => () => new HttpDrainer(proxy.server, proxy.logger, grace);
    assert.throws(invalid({ idleMs: -1 }), /invalid idleMs -1: expected an integer of 0 or more/);
    assert.throws(invalid({ idleMs: 1.5 }), /invalid idleMs 1.5/);
    assert.throws(invalid({ acceptMs: -5 }), /invalid acceptMs -5/);
  });

  it('loses no request on open connections', async () => {
    const drainer = new HttpDrainer(proxy.server, proxy.logger);
    // FIFO hands out every pooled connection in turn, so none sits idle through the grace
    // period, which is the one race a server cannot close (see docs/operations.md).
    const agent = new Agent({ keepAlive: true, maxSockets: 8, scheduling: 'fifo' });
    const counts = { ok: 0, refused: 0, lostOnOpenConnection: 0, lostOnNewConnection: 0 };
    let drained = false;
    const get = () =>
      new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port: proxy.port, path: '/x', agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) counts.ok++;
            resolve();
          });
        });
        req.on('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ECONNREFUSED') counts.refused++;
          else if (req.reusedSocket) counts.lostOnOpenConnection++;
          // The listener's backlog may hold a new connection when it closes.
          else counts.lostOnNewConnection++;
          resolve();
        });
        req.end();
      });
    // Each client stops at the end of the drain, and after 400 requests whatever happens.
    const loops = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 400 && !drained; i++) await get();
    });
    try {
      assert.ok(await eventually(() => counts.ok >= 200, 5_000), 'the clients got 200 responses');

      const result = await within(drainer.drain(10_000), 'the drain');
      drained = true;
      await within(Promise.all(loops), 'the clients to stop');

      assert.deepEqual(result, { completed: true, abandoned: 0 });
      assert.equal(counts.lostOnOpenConnection, 0);
      assert.ok(counts.ok >= 200);
    } finally {
      drained = true;
      agent.destroy();
    }
  });
});
