import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  json,
  listenNet,
  send,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Opens a raw connection and collects what arrives; `text()` returns it so far. */
function rawClient(port: number): { socket: Socket; text(): string; closed: Promise<void> } {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {
    // The tests read the outcome from what arrived.
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, text: () => Buffer.concat(chunks).toString('latin1'), closed };
}

async function waitForText(client: { text(): string }, pattern: RegExp, what: string) {
  for (let i = 0; i < 250 && !pattern.test(client.text()); i++) {
    await sleep(20);
  }
  assert.match(client.text(), pattern, what);
}

describe('proxy HTTP semantics', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  /** Requests the upstream received, by path. */
  const received: string[] = [];

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      received.push(`${req.method} ${req.url}`);
      const url = req.url ?? '';
      if (url === '/app/head') {
        res.writeHead(200, { 'content-length': '1234', 'content-type': 'text/plain' });
        res.end();
        return;
      }
      if (url === '/app/no-content') {
        res.writeHead(204, { 'x-kind': 'empty' });
        res.end();
        return;
      }
      if (url === '/app/not-modified') {
        res.writeHead(304, { etag: '"v1"', 'content-length': '42' });
        res.end();
        return;
      }
      if (url === '/app/early-hints') {
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        res.writeProcessing();
        res.end('final');
        return;
      }
      if (url === '/app/trailers') {
        res.writeHead(200, { trailer: 'x-checksum', 'content-type': 'text/plain' });
        res.write('body');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return;
      }
      req.resume();
      req.on('end', () => res.end(`ok ${req.method}`));
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('relays HEAD with its Content-Length', async () => {
    const client = rawClient(proxy.port);
    client.socket.write('HEAD /app/head HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await waitForText(client, /\r\n\r\n$/, 'the HEAD response head');
    // The connection stays usable: a second request on it gets its answer.
    client.socket.write('GET /app/after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    await within(client.closed, 'the connection to close');
    const text = client.text();
    const [first, second] = text.split(/(?=HTTP\/1\.1 )/);

    assert.match(first, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(first, /\r\ncontent-length: 1234\r\n/i);
    assert.ok(first.endsWith('\r\n\r\n'), 'the HEAD response carried a body');
    assert.doesNotMatch(first, /transfer-encoding/i);
    assert.match(second, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok GET$/);
  });

  it('ends 204 and 304 at the headers', async () => {
    const client = rawClient(proxy.port);
    client.socket.write('GET /app/no-content HTTP/1.1\r\nHost: a.test\r\n\r\n');
    client.socket.write('GET /app/not-modified HTTP/1.1\r\nHost: a.test\r\n\r\n');
    client.socket.write('GET /app/last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    await within(client.closed, 'the connection to close');
    const [noContent, notModified, last] = client.text().split(/(?=HTTP\/1\.1 )/);

    assert.match(noContent, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.match(noContent, /\r\nx-kind: empty\r\n/);
    assert.ok(noContent.endsWith('\r\n\r\n'));
    assert.match(notModified, /^HTTP\/1\.1 304 Not Modified\r\n/);
    assert.match(notModified, /\r\ncontent-length: 42\r\n/i);
    assert.ok(notModified.endsWith('\r\n\r\n'));
    assert.match(last, /\r\n\r\nok GET$/);
  });

  it('forwards 103 and 102 before the response', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /app/early-hints HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n',
    );
    const heads = response.split(/(?=HTTP\/1\.1 )/);

    assert.match(heads[0], /^HTTP\/1\.1 103 Early Hints\r\n/);
    assert.match(heads[0], /\r\nlink: <\/style.css>; rel=preload; as=style\r\n/i);
    assert.match(heads[1], /^HTTP\/1\.1 102 Processing\r\n/);
    assert.match(heads[2], /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(heads[2].endsWith('final'));
  });

  it('forwards response trailers', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /app/trailers HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\nConnection: close\r\n\r\n',
    );

    assert.match(response, /\r\ntrailer: x-checksum\r\n/i);
    assert.match(response, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.match(response, /\r\n4\r\nbody\r\n0\r\nx-checksum: abc123\r\n\r\n$/);
  });

  it('drops trailers for an HTTP/1.0 client', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /app/trailers HTTP/1.0\r\nHost: a.test\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(response, /trailer/i);
    assert.ok(response.endsWith('\r\n\r\nbody'));
  });
});

describe('proxy request smuggling defences', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  let forwarded = 0;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      forwarded++;
      req.resume();
      req.on('end', () => res.end('forwarded'));
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  const cases: Array<[string, string, number]> = [
    [
      'Content-Length with Transfer-Encoding',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      400,
    ],
    [
      'Transfer-Encoding before Content-Length',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
      400,
    ],
    [
      'two different Content-Length values',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      400,
    ],
    [
      'a Content-Length list',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello',
      400,
    ],
    [
      'chunked not last',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      400,
    ],
    [
      'an unknown coding before chunked',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      501,
    ],
    [
      'a coding split over two lines',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      501,
    ],
    [
      'Transfer-Encoding in HTTP/1.0',
      'POST /app/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      400,
    ],
    [
      'a space before the colon',
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      400,
    ],
    ['two Host headers', 'GET /app/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
    ['no Host header', 'GET /app/x HTTP/1.1\r\n\r\n', 400],
    ['a bare LF line ending', 'GET /app/x HTTP/1.1\nHost: a\n\n', 400],
    ['an obsolete line fold', 'GET /app/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n', 400],
  ];

  for (const [name, text, status] of cases) {
    it(`rejects ${name}`, async () => {
      const before = forwarded;
      // A second request follows on the same connection; it must never be parsed.
      const response = await sendRaw(
        proxy.port,
        `${text}GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n`,
      );

      assert.match(response, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.equal(response.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, 'more than one response');
      assert.equal(forwarded, before, 'the request reached the upstream');
    });
  }

  it('accepts chunked in any letter case', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n[\s\S]*forwarded$/);
  });
});

describe('proxy Expect 100-continue', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      let bytes = 0;
      req.on('data', (chunk: Buffer) => (bytes += chunk.length));
      req.on('end', () => res.end(`received ${bytes}`));
    });
    // Answers 401 to uploads under /app/deny before reading a byte of the body.
    upstream.server.on('checkContinue', (req, res) => {
      if (req.url === '/app/deny') {
        res.writeHead(401, { 'www-authenticate': 'Bearer', 'content-length': '6' });
        res.end('denied');
        return;
      }
      res.writeContinue();
      upstream.server.emit('request', req, res);
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('relays the upstream 100 before the body', async () => {
    const client = rawClient(proxy.port);
    client.socket.write(
      'POST /app/upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n',
    );
    await waitForText(client, /^HTTP\/1\.1 100 Continue\r\n\r\n$/, 'the 100 Continue');
    client.socket.write('hello');
    await within(client.closed, 'the connection to close');

    assert.match(client.text(), /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.ok(client.text().endsWith('received 5'));
  });

  it('relays an early 401 without the body', async () => {
    const client = rawClient(proxy.port);
    client.socket.write(
      'POST /app/deny HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n',
    );
    await within(client.closed, 'the proxy to close the connection');

    assert.match(client.text(), /^HTTP\/1\.1 401 Unauthorized\r\n/);
    assert.match(client.text(), /\r\nwww-authenticate: Bearer\r\n/i);
    assert.match(client.text(), /\r\nconnection: close\r\n/i);
    assert.ok(client.text().endsWith('denied'));
  });

  it('works through an HTTP client', async () => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxy.port,
      path: '/app/client',
      method: 'PUT',
      headers: { expect: '100-continue', 'content-length': '3' },
      agent: false,
    });
    const continued = once(req, 'continue');
    req.flushHeaders();
    await within(continued, 'the continue event');
    req.end('abc');
    const [res] = (await within(once(req, 'response'), 'the response')) as [IncomingMessage];
    res.setEncoding('utf8');
    let text = '';
    for await (const chunk of res) text += chunk as string;

    assert.equal(res.statusCode, 200);
    assert.equal(text, 'received 3');
  });
});

describe('proxy upload handling', () => {
  it('holds a large upload to a slow upstream', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let upstreamBytes = 0;
    const slow = await startHttpServer((req, res) => {
      req.pause();
      void released.then(() => {
        req.on('data', (chunk: Buffer) => (upstreamBytes += chunk.length));
        req.on('end', () => res.end(`got ${upstreamBytes}`));
        req.resume();
      });
    });
    const proxy = await startProxy({}, { maxRequestBodyBytes: 0 });
    try {
      proxy.publish(
        [{ name: 'slow', path: '/slow', upstream: 'slow' }],
        [upstreamAt('slow', slow.port)],
      );
      const total = 64 * 1024 * 1024;
      const chunk = Buffer.alloc(256 * 1024, 0x61);
      let sent = 0;
      const req = httpRequest({
        host: '127.0.0.1',
        port: proxy.port,
        path: '/slow',
        method: 'POST',
        headers: { 'content-length': String(total) },
        agent: false,
      });
      req.on('error', () => {
        // Reported through the response.
      });
      const pump = async (): Promise<void> => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) await once(req, 'drain');
        }
        req.end();
      };
      const pumping = pump();
      await sleep(500);
      const sentWhileStalled = sent;
      const memoryWhileStalled = process.memoryUsage().rss;
      release();
      await within(pumping, 'the upload to finish', 30_000);
      const [res] = (await within(once(req, 'response'), 'the upload response', 30_000)) as [
        IncomingMessage,
      ];
      let text = '';
      for await (const part of res) text += String(part);

      assert.ok(
        sentWhileStalled < total / 4,
        `the client sent ${sentWhileStalled} of ${total} bytes while the upstream read nothing`,
      );
      assert.ok(memoryWhileStalled > 0);
      assert.equal(text, `got ${total}`);
    } finally {
      release();
      await proxy.close();
      await slow.close();
    }
  });

  it('relays an early 413 from the upstream', async () => {
    // The upstream answers before reading the body, then reads and drops it.
    const early = await startHttpServer((req, res) => {
      res.writeHead(413, { 'content-type': 'text/plain' });
      res.end('too big');
      req.resume();
    });
    const proxy = await startProxy({}, { maxRequestBodyBytes: 0 });
    try {
      proxy.publish(
        [{ name: 'early', path: '/early', upstream: 'early' }],
        [upstreamAt('early', early.port)],
      );
      for (let attempt = 0; attempt < 5; attempt++) {
        const req = httpRequest({
          host: '127.0.0.1',
          port: proxy.port,
          path: '/early',
          method: 'POST',
          headers: { 'content-length': String(8 * 1024 * 1024) },
          agent: false,
        });
        req.on('error', () => {
          // The proxy may close the connection while the client still uploads.
        });
        req.write(Buffer.alloc(1024 * 1024));
        const [res] = (await within(once(req, 'response'), 'the early response')) as [
          IncomingMessage,
        ];
        let text = '';
        for await (const part of res) text += String(part);
        req.destroy();

        assert.equal(res.statusCode, 413, `attempt ${attempt}`);
        assert.equal(text, 'too big');
        assert.equal(res.headers.connection, 'close');
      }
    } finally {
      await proxy.close();
      await early.close();
    }
  });
  it('relays an early response before a reset', async () => {
    // The upstream responds as soon as the head arrives and closes without reading the body,
    // so its kernel resets the connection while the proxy still uploads.
    const upstream = createNetServer((socket) => {
      socket.once('data', () => {
        socket.write(
          'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big',
        );
        socket.destroy();
      });
    });
    const port = await listenNet(upstream);
    const proxy = await startProxy({}, { maxRequestBodyBytes: 0 });
    try {
      proxy.publish(
        [{ name: 'early', path: '/early', upstream: 'early' }],
        [upstreamAt('early', port)],
      );
      for (let attempt = 0; attempt < 5; attempt++) {
        const response = await uploadUntilAnswered(proxy.port, '/early', 'too big');
        assert.match(response, /^HTTP\/1\.1 413 /, `attempt ${attempt}: ${response.slice(0, 80)}`);
        assert.match(response, /\r\nconnection: close\r\n/i, `attempt ${attempt}`);
      }
    } finally {
      await proxy.close();
      upstream.close();
    }
  });
});

/**
 * Sends a 64 MiB upload on a raw connection and keeps writing until the response contains
 * `until` or the connection closes; returns the bytes received.
 */
async function uploadUntilAnswered(port: number, path: string, until: string): Promise<string> {
  const client = connect(port, '127.0.0.1');
  client.on('error', () => {
    // The proxy closes the connection while the upload runs.
  });
  let received = '';
  let done = false;
  const answered = new Promise<void>((resolve) => {
    client.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes(until)) resolve();
    });
    client.once('close', () => resolve());
  });
  client.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let sent = 0;
  const pump = (): void => {
    while (!done && sent < 1024) {
      sent++;
      if (!client.write(chunk)) {
        client.once('drain', pump);
        return;
      }
    }
  };
  pump();
  try {
    await within(answered, 'the early response');
  } finally {
    done = true;
    client.destroy();
  }
  return received;
}

describe('proxy client limits', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    proxy = await startProxy(
      {},
      {
        maxHeaderBytes: 4096,
        maxHeaderCount: 20,
        headersTimeoutMs: 1_000,
        requestTimeoutMs: 2_000,
        maxRequestBodyBytes: 1024,
      },
    );
    proxy.publish(
      [
        { name: 'app', path: '/app/*', upstream: 'app' },
        { name: 'big', path: '/big/*', upstream: 'app', maxRequestBodyBytes: 4096 },
      ],
      [upstreamAt('app', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('returns 431 for oversized headers', async () => {
    const response = await sendRaw(
      proxy.port,
      `GET /app/x HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`,
    );

    assert.match(response, /^HTTP\/1\.1 431 /);
    assert.match(response, /"error":"request_header_fields_too_large"/);
  });

  it('returns 431 for too many headers', async () => {
    const headers = Array.from({ length: 25 }, (_, i) => `X-H${i}: ${i}\r\n`).join('');

    const response = await sendRaw(proxy.port, `GET /app/x HTTP/1.1\r\nHost: a\r\n${headers}\r\n`);

    assert.match(response, /^HTTP\/1\.1 431 /);
    assert.match(response, /request_header_fields_too_large/);
  });

  it('returns 413 for a declared large body', async () => {
    const response = await send(proxy.port, '/app/upload', {
      method: 'POST',
      body: Buffer.alloc(2048),
    });

    assert.equal(response.status, 413);
    assert.equal(json(response).error, 'payload_too_large');
    assert.equal(response.headers.connection, 'close');
  });

  it('returns 413 for a large chunked body', async () => {
    const client = rawClient(proxy.port);
    client.socket.write(
      'POST /app/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n',
    );
    for (let i = 0; i < 4; i++) {
      client.socket.write(`200\r\n${'b'.repeat(512)}\r\n`);
    }
    await within(client.closed, 'the proxy to close the connection');

    assert.match(client.text(), /^HTTP\/1\.1 413 /);
  });

  it('applies the route body limit', async () => {
    const accepted = await send(proxy.port, '/big/upload', {
      method: 'POST',
      body: Buffer.alloc(3000),
    });
    const rejected = await send(proxy.port, '/big/upload', {
      method: 'POST',
      body: Buffer.alloc(5000),
    });

    assert.equal(accepted.status, 200);
    assert.equal(rejected.status, 413);
  });

  it('returns 408 to a client that sends headers slowly', async () => {
    const client = rawClient(proxy.port);
    const text = 'GET /app/slow HTTP/1.1\r\nHost: a\r\nX-Slow: ';
    const dripping = (async () => {
      for (let i = 0; i < text.length + 20 && !client.socket.destroyed; i++) {
        client.socket.write(text[i] ?? 'x');
        await sleep(100);
      }
    })();
    await within(client.closed, 'the proxy to close the slow connection', 5_000);
    await dripping;

    assert.match(client.text(), /^HTTP\/1\.1 408 /);
    assert.match(client.text(), /"error":"request_timeout"/);
  });

  it('closes a connection that never sends a request', async () => {
    const client = rawClient(proxy.port);
    client.socket.write('G');

    await within(client.closed, 'the proxy to close the idle connection', 5_000);
    assert.match(client.text(), /^(HTTP\/1\.1 408 |)/);
  });
});

describe('proxy upstream response limits', () => {
  it('returns 502 for oversized upstream headers', async () => {
    const sockets = new Set<Socket>();
    const raw = createNetServer((socket) => {
      sockets.add(socket);
      socket.once('data', () => {
        socket.end(`HTTP/1.1 200 OK\r\nX-Huge: ${'h'.repeat(4000)}\r\nContent-Length: 2\r\n\r\nok`);
      });
    });
    const port = await listenNet(raw);
    const proxy = await startProxy({ maxResponseHeaderBytes: 1024 });
    try {
      proxy.publish([{ name: 'raw', path: '/raw', upstream: 'raw' }], [upstreamAt('raw', port)]);

      const response = await send(proxy.port, '/raw');

      assert.equal(response.status, 502);
      assert.match(String(json(response).message), /headers are larger/);
    } finally {
      for (const socket of sockets) socket.destroy();
      raw.close();
      await proxy.close();
    }
  });
});
