import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createProxyHandlers } from '../../data-plane/proxy/proxy.js';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  captureLogger,
  eventually,
  pausedClient,
  startHttpServer,
  startProxy,
  streamBody,
  upstreamAt,
  WAIT_MS,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Size of the upstream's `/big` response: far more than the socket buffers hold. */
const BIG_BYTES = 32 * 1024 * 1024;
/** Size of the upstream's `/medium` response, which a slow client reads to the end. */
const MEDIUM_BYTES = 24 * 1024 * 1024;

/** Paths of the upstream responses that closed before they finished. */
const cutResponses: string[] = [];

/** Returns the body length of the one raw response in `text`. */
function bodyLength(text: string): number {
  return text.length - (text.indexOf('\r\n\r\n') + 4);
}

describe('send timeout', () => {
  let upstream: RunningServer;
  let cutting: ProxyFixture;
  let cuttingTarget: UpstreamTarget;
  let patient: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      const path = req.url ?? '';
      res.once('close', () => {
        if (!res.writableFinished) cutResponses.push(path);
      });
      req.resume();
      req.once('end', () => {
        const bytes = path === '/medium' ? MEDIUM_BYTES : BIG_BYTES;
        res.writeHead(200, { 'content-length': String(bytes) });
        streamBody(res, bytes);
      });
    });
    cutting = await startProxy({}, { sendTimeoutMs: 300 });
    const table = cutting.publish(
      [{ name: 'app', path: '/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
    const match = table.router.find('GET', undefined, '/big');
    assert.equal(match.kind, 'found');
    cuttingTarget = match.value.balancer!.targets[0];
    patient = await startProxy({}, { sendTimeoutMs: 0 });
    patient.publish(
      [{ name: 'app', path: '/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  beforeEach(() => {
    cutResponses.length = 0;
  });

  after(async () => {
    await cutting.close();
    await patient.close();
    await upstream.close();
  });

  it('cuts off a client that reads nothing', async () => {
    const { socket, closed } = await pausedClient(cutting.port);
    socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');

    assert.ok(
      await eventually(() => cutResponses.length > 0, WAIT_MS),
      'upstream response still running',
    );
    assert.deepEqual(cutResponses, ['/big']);
    assert.ok(
      await eventually(() => cuttingTarget.state.active === 0, WAIT_MS),
      'target still busy',
    );
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.resume();
    await within(closed, 'the client to see the closed connection');
    assert.match(received, /^HTTP\/1\.1 200 /);
    assert.ok(bodyLength(received) < BIG_BYTES, 'the client got the whole body');
  });

  it('keeps a client that reads in bursts', async () => {
    const { socket, closed } = await pausedClient(cutting.port);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write('GET /medium HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');

    // Reads for 5 ms out of every 150 ms, half the send timeout, for at most 30 s.
    let ended = false;
    void closed.then(() => (ended = true));
    for (let turn = 0; turn < 200 && !ended; turn++) {
      await sleep(145);
      socket.resume();
      await sleep(5);
      socket.pause();
    }
    socket.resume();
    await within(closed, 'the response to end');

    assert.deepEqual(cutResponses, []);
    assert.equal(bodyLength(received), MEDIUM_BYTES);
  });

  it('waits for ever when set to 0', async () => {
    const { socket, closed } = await pausedClient(patient.port);
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.write('GET /medium HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await sleep(1_000);
    assert.deepEqual(cutResponses, []);

    socket.resume();
    await within(closed, 'the response to end');
    assert.ok(received > MEDIUM_BYTES, `got ${received} bytes`);
    assert.deepEqual(cutResponses, []);
  });

  it('cuts off an unread 100-continue response', async () => {
    const { socket, closed } = await pausedClient(cutting.port);
    socket.write(
      'POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n',
    );
    await sleep(100);
    socket.write('hello');

    assert.ok(
      await eventually(() => cutResponses.length > 0, WAIT_MS),
      'upstream response still running',
    );
    assert.deepEqual(cutResponses, ['/big']);
    socket.resume();
    await within(closed, 'the client to see the closed connection');
  });

  it('rejects a negative send timeout', () => {
    const { logger } = captureLogger();
    assert.throws(
      () => createProxyHandlers({ getTable: () => undefined, logger, sendTimeoutMs: -1 }),
      {
        code: 'LOOM_INVALID_ARGUMENT',
        message:
          'invalid sendTimeoutMs -1: expected an integer from 0 to 2147483647; use 0 for no ' +
          'limit or a value such as 60000',
      },
    );
  });
});
