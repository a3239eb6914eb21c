import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createProxyHandlers } from '../../data-plane/proxy/proxy.js';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  captureLogger,
  eventually,
  pausedClient,
  ResponseRecorder,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  streamBody,
  WAIT_MS,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Size of the upstream's `/big` response: far more than the socket buffers hold. */
const BIG_BYTES = 32 * 1024 * 1024;
/** Size of the upstream's `/medium` response, which a slow client reads to the end. */
const MEDIUM_BYTES = 24 * 1024 * 1024;

/** Paths of the upstream's responses, by how they ended. */
const responses = new ResponseRecorder();

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
    upstream = await startHttpServer(
      responses.wrap((req, res) => {
        req.resume();
        req.once('end', () => {
          const bytes = req.url === '/medium' ? MEDIUM_BYTES : BIG_BYTES;
          res.writeHead(200, { 'content-length': String(bytes) });
          streamBody(res, bytes);
        });
      }),
    );
    cutting = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    cuttingTarget = cutting.publishOne('app', upstream.port);
    patient = await startProxy({}, { sendTimeoutMs: 0 });
    patient.publishOne('app', upstream.port);
  });

  beforeEach(() => {
    responses.clear();
  });

  after(async () => {
    await cutting.close();
    await patient.close();
    await upstream.close();
  });

  it('cuts off a client that reads nothing', async () => {
    const { socket, closed, received } = await pausedClient(cutting.port);
    socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');

    assert.ok(
      await eventually(() => responses.cut.length > 0, WAIT_MS),
      'upstream response still running',
    );
    assert.deepEqual(responses.cut, ['/big']);
    assert.ok(
      await eventually(() => cuttingTarget.state.active === 0, WAIT_MS),
      'target still busy',
    );
    socket.resume();
    await within(closed, 'the client to see the closed connection');
    const response = received().toString('latin1');
    assert.match(response, /^HTTP\/1\.1 200 /);
    assert.ok(bodyLength(response) < BIG_BYTES, 'the client got the whole body');
  });

  it('keeps a client that reads in bursts', async () => {
    const { socket, closed, received } = await pausedClient(cutting.port);
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

    assert.deepEqual(responses.cut, []);
    assert.equal(bodyLength(received().toString('latin1')), MEDIUM_BYTES);
  });

  it('waits for ever when set to 0', async () => {
    const { socket, closed, received } = await pausedClient(patient.port);
    socket.write('GET /medium HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await sleep(1_000);
    assert.deepEqual(responses.cut, []);

    socket.resume();
    await within(closed, 'the response to end');
    assert.ok(received().length > MEDIUM_BYTES, `got ${received().length} bytes`);
    assert.deepEqual(responses.cut, []);
  });

  it('cuts off an unread 100-continue response', async () => {
    const { socket, closed } = await pausedClient(cutting.port);
    socket.write(
      'POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n',
    );
    await sleep(100);
    socket.write('hello');

    assert.ok(
      await eventually(() => responses.cut.length > 0, WAIT_MS),
      'upstream response still running',
    );
    assert.deepEqual(responses.cut, ['/big']);
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
