import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  pausedClient,
  ResponseRecorder,
  SEND_TIMEOUT_MS,
  startHttpServer,
  startProxy,
  streamBody,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Body size of `/body`: far more than the socket buffers hold (several MiB on loopback). */
const BODY_BYTES = 32 * 1024 * 1024;

/** Paths of the upstream's responses, by how they ended. */
const responses = new ResponseRecorder();

/** Returns the body of the one response in `raw`: the bytes after the head. */
function bodyOf(raw: Buffer): Buffer {
  const end = raw.indexOf('\r\n\r\n');
  return end === -1 ? Buffer.alloc(0) : raw.subarray(end + 4);
}

describe('send timeout with short waits', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer(
      responses.wrap((req, res) => {
        req.resume();
        req.once('end', () => {
          if (req.url === '/not-modified') {
            res.writeHead(304, { etag: '"x"', 'content-length': String(BODY_BYTES) });
            res.end();
            return;
          }
          res.writeHead(200, { 'content-length': String(BODY_BYTES) });
          if (req.method === 'HEAD') {
            res.end();
            return;
          }
          streamBody(res, BODY_BYTES);
        });
      }),
    );
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.publishOne('app', upstream.port);
  });

  beforeEach(async () => {
    // The previous test's client may have left an upstream response still closing.
    await sleep(50);
    responses.clear();
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('keeps a briefly paused client', async () => {
    const reading = await pausedClient(proxy.port);
    reading.socket.write('GET /body HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    // The buffers fill within a few milliseconds, and the client then waits two thirds of the
    // send timeout before it reads everything.
    await sleep(SEND_TIMEOUT_MS * (2 / 3));
    reading.socket.resume();
    await within(reading.closed, 'the response to end');
    const failure = reading.error();

    assert.equal(failure, undefined, `the client connection failed: ${failure?.code}`);
    assert.deepEqual(responses.cut, []);
    assert.equal(bodyOf(reading.received()).length, BODY_BYTES);
  });

  it('keeps unread HEAD and 304 responses', async () => {
    const reading = await pausedClient(proxy.port);
    reading.socket.write(
      'HEAD /body HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /not-modified HTTP/1.1\r\nHost: a\r\nIf-None-Match: "x"\r\n\r\n' +
        'HEAD /body HTTP/1.0\r\nHost: a\r\n\r\n',
    );
    await sleep(SEND_TIMEOUT_MS * 3);
    reading.socket.resume();
    await within(reading.closed, 'the HTTP/1.0 response to close');
    const failure = reading.error();

    assert.equal(failure, undefined, `the client connection failed: ${failure?.code}`);
    const statuses = [
      ...reading
        .received()
        .toString('latin1')
        .matchAll(/HTTP\/1\.1 (\d+)/g),
    ];
    assert.deepEqual(
      statuses.map((match) => match[1]),
      ['200', '304', '200'],
    );
  });
});
