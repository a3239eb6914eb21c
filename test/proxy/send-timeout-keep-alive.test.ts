import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startHttpServer,
  startProxy,
  type LogLine,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Body size of `/body`, read slowly by the client. */
const BODY_BYTES = 6 * 1024 * 1024;
/** Size of the last piece of `/body`, sent after a pause so that it reaches a paused proxy. */
const TAIL_BYTES = 48 * 1024;
/**
 * Send timeout of the proxy, in milliseconds, above the 300 ms of the other send timeout tests.
 * The client and the proxy share one process. When a loaded machine stops that process for
 * longer than the send timeout, the proxy cuts the client as it should.
 */
const SEND_TIMEOUT_MS = 1_000;
/** Time the upstream takes to respond to `/slow`: several send timeouts. */
const SLOW_MS = 3 * SEND_TIMEOUT_MS;
/** Number of slow-read exchanges tried on one connection each. */
const ATTEMPTS = 2;

/** Writes `bytes` bytes to `res`, the last TAIL_BYTES of them 50 ms after the others. */
async function streamWithTail(res: ServerResponse, bytes: number): Promise<void> {
  res.writeHead(200, { 'content-length': String(bytes) });
  const head = Buffer.alloc(bytes - TAIL_BYTES, 'a');
  if (!res.write(head)) await once(res, 'drain');
  await sleep(50);
  res.end(Buffer.alloc(TAIL_BYTES, 'z'));
}

/** A raw keep-alive client connection that reads only inside `readFor`. */
class SlowClient {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  error: NodeJS.ErrnoException | undefined;
  closed = false;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('error', (err: NodeJS.ErrnoException) => (this.error = err));
    this.socket.on('close', () => (this.closed = true));
    this.socket.pause();
  }

  /** Reads what arrives for `ms` milliseconds. */
  async readFor(ms: number): Promise<void> {
    const onData = (chunk: Buffer): void => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
    };
    this.socket.on('data', onData);
    this.socket.resume();
    await sleep(ms);
    this.socket.pause();
    this.socket.removeListener('data', onData);
  }

  /**
   * Waits until the buffer contains a final response with a `Content-Length` body, reading for
   * `burstMs` out of every `intervalMs`, and returns its status and body size.
   */
  async response(
    burstMs: number,
    intervalMs: number,
    maxMs: number,
  ): Promise<{ status: number; bodyBytes: number } | undefined> {
    const deadline = performance.now() + maxMs;
    while (performance.now() < deadline && !this.closed) {
      await this.readFor(burstMs);
      const parsed = this.#parse();
      if (parsed !== undefined) return parsed;
      await sleep(intervalMs - burstMs);
    }
    return this.#parse();
  }

  #parse(): { status: number; bodyBytes: number } | undefined {
    let text = this.#buffer.toString('latin1');
    // Drops interim 1xx responses.
    while (/^HTTP\/1\.1 1\d\d /.test(text) && text.includes('\r\n\r\n')) {
      const skip = text.indexOf('\r\n\r\n') + 4;
      this.#buffer = this.#buffer.subarray(skip);
      text = this.#buffer.toString('latin1');
    }
    const end = text.indexOf('\r\n\r\n');
    if (end === -1) return undefined;
    const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? NaN);
    if (this.#buffer.length < end + 4 + length) return undefined;
    this.#buffer = this.#buffer.subarray(end + 4 + length);
    return { status: Number(text.slice(9, 12)), bodyBytes: length };
  }
}

function cutOffLines(logs: LogLine[]): LogLine[] {
  return logs.filter((line) => line.msg.startsWith('client connection cut off'));
}

describe('send timeout on keep-alive connections', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      req.once('end', () => {
        if (req.url === '/slow') {
          setTimeout(() => res.end('done'), SLOW_MS);
          return;
        }
        void streamWithTail(res, BODY_BYTES);
      });
    });
    proxy = await startProxy({}, { sendTimeoutMs: SEND_TIMEOUT_MS });
    proxy.publishOne('app', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  for (const [name, head] of [
    ['plain', 'GET /body HTTP/1.1\r\nHost: a\r\n\r\n'],
    [
      '100-continue',
      'POST /body HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n',
    ],
  ] as const) {
    it(`keeps connection after slow ${name} read`, async () => {
      for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
        const client = new SlowClient(proxy.port);
        await once(client.socket, 'connect');
        client.socket.write(head);
        // Reads for 5 ms out of every 100 ms, which takes megabytes at every turn.
        const first = await client.response(5, 100, 20_000);
        assert.deepEqual(first, { status: 200, bodyBytes: BODY_BYTES }, `attempt ${attempt}`);

        // The connection is idle and then carries a healthy request, which the client reads at once.
        client.socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
        const second = await client.response(10, 10, SLOW_MS + 2_000);
        const failure = client.error?.code;
        client.socket.destroy();
        assert.deepEqual(
          { response: second, failure, cutOffs: cutOffLines(proxy.logs).length },
          { response: { status: 200, bodyBytes: 4 }, failure: undefined, cutOffs: 0 },
          `attempt ${attempt}: the proxy cut off a connection that had nothing left to send`,
        );
      }
    });
  }
});
