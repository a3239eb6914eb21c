import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { NO_OBSERVER, type ProxyObserver } from '../../data-plane/proxy/observer.js';
import {
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Reads from a raw socket until `done` accepts what arrived so far. */
async function readUntil(
  socket: ReturnType<typeof connect>,
  done: (text: string) => boolean,
  description: string,
): Promise<string> {
  let text = '';
  const complete = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('latin1');
      if (done(text)) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`connection closed after ${text.length} bytes`)));
  });
  await within(complete, description);
  return text;
}

/** Counts the status lines in raw response text. */
function countStatusLines(text: string): number {
  return (text.match(/^HTTP\/1\.1 /gm) ?? []).length;
}

describe('proxy response writes', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  const finished: { status: number; bytesSent: number }[] = [];
  const observer: ProxyObserver = {
    ...NO_OBSERVER,
    enabled: true,
    requestFinished(_req, _route, status, _target, bytesSent) {
      finished.push({ status, bytesSent });
    },
  };
  /** Resolves the wait of the `/parts` handler once the client saw its first part. */
  let firstPartSeen: () => void = () => {};

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      if (req.url === '/small') {
        res.writeHead(200, { 'content-length': '12', 'content-type': 'text/plain' });
        res.end('hello world\n');
      } else if (req.url === '/not-modified') {
        res.writeHead(304, { 'content-length': '12', etag: '"a"' });
        res.end();
      } else if (req.url === '/parts') {
        // The rest is sent only after the client got the first part, so a proxy that held
        // the body back until it was complete would never finish this response.
        const seen = new Promise<void>((resolve) => (firstPartSeen = resolve));
        res.writeHead(200, { 'content-length': '15' });
        res.write('first');
        void seen.then(async () => {
          res.write('-then');
          await sleep(20);
          res.end('-last');
        });
      } else {
        res.writeHead(404, { 'content-length': '0' });
        res.end();
      }
    });
    proxy = await startProxy({}, { observer });
    proxy.publish([{ name: 'any', path: '/*', upstream: 'up' }], [upstreamAt('up', upstream.port)]);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('reuses a keep-alive connection', async () => {
    finished.length = 0;
    const socket = connect(proxy.port, '127.0.0.1');
    try {
      for (let i = 1; i <= 3; i++) {
        socket.write('GET /small HTTP/1.1\r\nHost: a\r\n\r\n');
        const text = await readUntil(
          socket,
          (received) => received.endsWith('hello world\n'),
          `response ${i} on one connection`,
        );
        assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
        assert.match(text, /\r\ncontent-length: 12\r\n/i);
        assert.equal(countStatusLines(text), 1);
      }
      assert.deepEqual(
        finished.map((entry) => entry.bytesSent),
        [12, 12, 12],
      );
    } finally {
      socket.destroy();
    }
  });

  it('ends HEAD and 304 at the headers', async () => {
    const socket = connect(proxy.port, '127.0.0.1');
    try {
      socket.write('HEAD /small HTTP/1.1\r\nHost: a\r\n\r\n');
      const head = await readUntil(
        socket,
        (text) => text.endsWith('\r\n\r\n'),
        'the HEAD response',
      );
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /\r\ncontent-length: 12\r\n/i);

      socket.write('GET /not-modified HTTP/1.1\r\nHost: a\r\n\r\n');
      const notModified = await readUntil(
        socket,
        (text) => text.endsWith('\r\n\r\n'),
        'the 304 response',
      );
      assert.match(notModified, /^HTTP\/1\.1 304 Not Modified\r\n/);

      // Both ended at their headers, so the connection still carries a whole response.
      socket.write('GET /small HTTP/1.1\r\nHost: a\r\n\r\n');
      const small = await readUntil(
        socket,
        (text) => text.endsWith('hello world\n'),
        'the response after HEAD and 304',
      );
      assert.match(small, /^HTTP\/1\.1 200 OK\r\n/);
    } finally {
      socket.destroy();
    }
  });

  it('streams a sized body in parts', async () => {
    const req = httpRequest({ host: '127.0.0.1', port: proxy.port, path: '/parts', agent: false });
    req.end();
    const [res] = (await within(once(req, 'response'), 'the response to /parts')) as [
      IncomingMessage,
    ];
    const chunks: string[] = [];
    res.on('data', (chunk: Buffer) => {
      chunks.push(chunk.toString('latin1'));
      if (chunks.length === 1) firstPartSeen();
    });
    await within(once(res, 'end'), 'the end of /parts');

    assert.equal(res.statusCode, 200);
    assert.equal(chunks[0], 'first');
    assert.equal(chunks.join(''), 'first-then-last');
  });
});
