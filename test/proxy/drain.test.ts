import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent, createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';

import { pino } from 'pino';

import { HttpDrainer } from '../../data-plane/lifecycle/drain.js';
import { listenHttp, within } from './harness.js';

const silent = pino({ level: 'silent' });

/** Starts a server that responds to `/hold/MS` after MS milliseconds, with its drainer. */
async function startHeldServer() {
  const server = createServer((req, res) => {
    // `/hold/0` never gets a response.
    const ms = Number((req.url ?? '').split('/')[2] ?? 0);
    if (ms > 0) setTimeout(() => res.end('done'), ms);
  });
  const drainer = new HttpDrainer(server, silent);
  const running = await listenHttp(server);
  return { ...running, drainer };
}

function get(port: number, path: string, agent: Agent): Promise<IncomingMessage> {
  const req = httpRequest({ host: '127.0.0.1', port, path, agent });
  req.end();
  return once(req, 'response').then(([res]) => res as IncomingMessage);
}

describe('http drainer', () => {
  it('drain lets in-flight requests finish', async () => {
    const fixture = await startHeldServer();
    const agent = new Agent({ keepAlive: true });
    try {
      const pending = get(fixture.port, '/hold/300', agent);
      await within(
        new Promise<void>((resolve) => fixture.server.once('request', () => resolve())),
        'the request to arrive',
      );
      assert.equal(fixture.drainer.inFlight, 1);

      const result = await within(fixture.drainer.drain(5_000), 'the drain');
      const res = await pending;
      res.resume();

      assert.deepEqual(result, { completed: true, abandoned: 0 });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers.connection, 'close');
      assert.equal(fixture.drainer.draining, true);
      assert.equal(fixture.drainer.inFlight, 0);
    } finally {
      agent.destroy();
      await fixture.close();
    }
  });

  it('drain closes idle keep-alive connections', async () => {
    const fixture = await startHeldServer();
    const agent = new Agent({ keepAlive: true });
    try {
      const res = await get(fixture.port, '/hold/1', agent);
      res.resume();
      await once(res, 'end');
      const idle = Object.values(agent.freeSockets).flat()[0] as Socket;
      assert.ok(idle, 'the agent keeps the connection');
      const closed = once(idle, 'close');

      const result = await within(fixture.drainer.drain(5_000), 'the drain');

      await within(closed, 'the idle connection to close');
      assert.deepEqual(result, { completed: true, abandoned: 0 });
    } finally {
      agent.destroy();
      await fixture.close();
    }
  });

  it('drain deadline closes upgraded connections', async () => {
    const fixture = await startHeldServer();
    // The upgraded connection stays open until someone closes it, as a WebSocket tunnel does.
    fixture.server.on('upgrade', (_req, socket: Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n');
    });
    const client = connect(fixture.port, '127.0.0.1');
    try {
      client.write('GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n');
      await within(once(client, 'data'), 'the 101');
      const closed = once(client, 'close');

      const result = await within(fixture.drainer.drain(200), 'the drain');

      assert.deepEqual(result, { completed: false, abandoned: 1 });
      await within(closed, 'the upgraded connection to close');
    } finally {
      client.destroy();
      await fixture.close();
    }
  });

  it('drain deadline abandons long requests', async () => {
    const fixture = await startHeldServer();
    const agent = new Agent({ keepAlive: true });
    try {
      const pending = get(fixture.port, '/hold/0', agent).catch((err: unknown) => err);
      await within(
        new Promise<void>((resolve) => fixture.server.once('request', () => resolve())),
        'the request to arrive',
      );

      const result = await within(fixture.drainer.drain(200), 'the drain');

      assert.deepEqual(result, { completed: false, abandoned: 1 });
      assert.ok((await pending) instanceof Error, 'the cut request fails');
    } finally {
      agent.destroy();
      await fixture.close();
    }
  });
});
