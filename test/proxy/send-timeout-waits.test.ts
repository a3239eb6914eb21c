import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startHttpServer,
  startProxy,
  streamBody,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Send timeout of the proxy under test, in milliseconds. */
const SEND_TIMEOUT_MS = 300;
/** Body size of `/body`: far more than the socket buffers hold (several MiB on loopback). */
const BODY_BYTES = 32 * 1024 * 1024;

/** Paths of the upstream responses that closed before they finished. */
const cutResponses: string[] = [];

/** What a raw client read from one connection. */
interface Reading {
  socket: Socket;
  /** Every byte received so far. */
  received(): Buffer;
  /** Resolves with the socket error, if any, once the connection closed. */
  closed: Promise<NodeJS.ErrnoException | undefined>;
}

/** Opens a paused raw connection that keeps what it reads, and writes `text` on it. */
async function openPaused(port: number, text: string): Promise<Reading> {
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  let failure: NodeJS.ErrnoException | undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => (failure = err));
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  // `on('data')` resumes the socket, and the tests decide when it reads.
  socket.pause();
  const closed = new Promise<NodeJS.ErrnoException | undefined>((resolve) =>
    socket.once('close', () => resolve(failure)),
  );
  socket.write(text);
  return { socket, received: () => Buffer.concat(chunks), closed };
}

/** Returns the body of the one response in `raw`: the bytes after the head. */
function bodyOf(raw: Buffer): Buffer {
  const end = raw.indexOf('\r\n\r\n');
  return end === -1 ? Buffer.alloc(0) : raw.subarray(end + 4);
}

describe('send timeout with short waits', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      const path = req.url ?? '';
      res.once('close', () => {
        if (!res.writableFinished) cutResponses.push(path);
      });
      req.resume();
      req.once('end', () => {
        if (path === '/not-modified') {
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
    });
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.publish(
      [{ name: 'app', path: '/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  beforeEach(async () => {
    // The previous test's client may have left an upstream response still closing.
    await sleep(50);
    cutResponses.length = 0;
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('keeps a briefly paused client', async () => {
    const reading = await openPaused(
      proxy.port,
      'GET /body HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    // The buffers fill within a few milliseconds, and the client then waits two thirds of the
    // send timeout before it reads everything.
    await sleep(SEND_TIMEOUT_MS * (2 / 3));
    reading.socket.resume();
    const failure = await within(reading.closed, 'the response to end');

    assert.equal(failure, undefined, `the client connection failed: ${failure?.code}`);
    assert.deepEqual(cutResponses, []);
    assert.equal(bodyOf(reading.received()).length, BODY_BYTES);
  });

  it('keeps unread HEAD and 304 responses', async () => {
    const reading = await openPaused(
      proxy.port,
      'HEAD /body HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /not-modified HTTP/1.1\r\nHost: a\r\nIf-None-Match: "x"\r\n\r\n' +
        'HEAD /body HTTP/1.0\r\nHost: a\r\n\r\n',
    );
    await sleep(SEND_TIMEOUT_MS * 3);
    reading.socket.resume();
    const failure = await within(reading.closed, 'the HTTP/1.0 response to close');

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
