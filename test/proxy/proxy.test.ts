import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  json,
  listenNet,
  rawHeaderNames,
  send,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('proxy forwarding', () => {
  let proxy: ProxyFixture;
  let echo: RunningServer;

  before(async () => {
    // Echoes what it received: method, URL, headers, and the size and hash of the body.
    echo = await startHttpServer((req, res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            headers: req.headers,
            rawHeaders: req.rawHeaders,
            bytes,
            sha256: hash.digest('hex'),
          }),
        );
      });
    });
    proxy = await startProxy();
    proxy.publish(
      [
        { name: 'echo', path: '/echo/*', upstream: 'echo' },
        { name: 'versioned', path: '/users/*', upstream: 'echo-v1' },
        { name: 'root-base', path: '/root/*', upstream: 'echo-root' },
      ],
      [
        upstreamAt('echo', echo.port),
        upstreamAt('echo-v1', echo.port, '/v1/'),
        upstreamAt('echo-root', echo.port, '/'),
      ],
    );
  });

  after(async () => {
    await proxy.close();
    await echo.close();
  });

  it('keeps the query byte for byte', async () => {
    const target = '/echo/a%2Fb/c;p=1?b=2&a=1&a=3&x=%2F%20+y&empty=&&flag&q=./..';

    const response = await send(proxy.port, target);

    assert.equal(response.status, 200);
    assert.equal(json(response).url, target);
    assert.equal(json(response).method, 'GET');
  });

  it('forwards the normalised path', async () => {
    const response = await send(proxy.port, '/echo/x/../a%2fb/./%7Euser/c/..?k=./..');

    assert.equal(response.status, 200);
    assert.equal(json(response).url, '/echo/a%2Fb/~user/?k=./..');
  });

  it('joins the base path without a double slash', async () => {
    const versioned = await send(proxy.port, '/users/1?x=1');
    const rootBase = await send(proxy.port, '/root/a/b');

    assert.equal(json(versioned).url, '/v1/users/1?x=1');
    assert.equal(json(rootBase).url, '/root/a/b');
  });

  it('streams a 5 MB POST body', async () => {
    const body = randomBytes(5 * 1024 * 1024);

    const response = await send(proxy.port, '/echo/upload', { method: 'POST', body });

    assert.equal(response.status, 200);
    assert.equal(json(response).method, 'POST');
    assert.equal(json(response).bytes, body.length);
    assert.equal(json(response).sha256, sha256(body));
  });

  it('streams a chunked POST body', async () => {
    const parts = Array.from({ length: 40 }, () => randomBytes(128 * 1024));
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxy.port,
      path: '/echo/chunked',
      method: 'PUT',
      agent: false,
    });
    for (const part of parts) {
      if (!req.write(part)) {
        await within(once(req, 'drain'), 'the proxy to drain the request body');
      }
    }
    req.end();
    const [res] = (await within(once(req, 'response'), 'the chunked upload response')) as [
      IncomingMessage,
    ];
    const chunks: Buffer[] = [];
    for await (const chunk of res) {
      chunks.push(chunk as Buffer);
    }
    const echoed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    const headers = echoed.headers as Record<string, string>;

    assert.equal(headers['transfer-encoding'], 'chunked');
    assert.equal(echoed.bytes, 40 * 128 * 1024);
    assert.equal(echoed.sha256, sha256(Buffer.concat(parts)));
  });

  it('sends no body for a GET', async () => {
    const response = await send(proxy.port, '/echo/get');
    const headers = json(response).headers as Record<string, string>;

    assert.equal(headers['transfer-encoding'], undefined);
    assert.equal(headers['content-length'], undefined);
    assert.equal(json(response).bytes, 0);
  });

  it('keeps Host and sets X-Forwarded headers', async () => {
    const response = await send(proxy.port, '/echo/forwarded', {
      headers: {
        host: 'api.example.test:8443',
        'x-forwarded-for': '203.0.113.7, 10.1.1.1',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'spoofed.test',
        'x-real-ip': '203.0.113.7',
      },
    });
    const headers = json(response).headers as Record<string, string>;

    assert.equal(headers['x-real-ip'], undefined);
    assert.equal(headers.host, 'api.example.test:8443');
    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(headers['x-forwarded-proto'], 'http');
    assert.equal(headers['x-forwarded-host'], 'api.example.test:8443');
    assert.equal(headers['x-forwarded-port'], String(proxy.port));
  });

  it('sends Via with client HTTP version', async () => {
    const http11 = await send(proxy.port, '/echo/via', { headers: { via: '1.1 edge' } });
    const http10 = await sendRaw(
      proxy.port,
      'GET /echo/via HTTP/1.0\r\nHost: api.example.test\r\n\r\n',
    );

    assert.equal((json(http11).headers as Record<string, string>).via, '1.1 edge, 1.1 loom');
    const body = http10.slice(http10.indexOf('\r\n\r\n') + 4);
    assert.equal((JSON.parse(body) as { headers: Record<string, string> }).headers.via, '1.0 loom');
  });

  it('keeps X-Forwarded headers of trusted proxies', async () => {
    const trusting = await startProxy({}, { trustedProxies: ['10.0.0.0/8', '127.0.0.1'] });
    try {
      trusting.publish(
        [{ name: 'echo', path: '/echo/*', upstream: 'echo' }],
        [upstreamAt('echo', echo.port)],
      );

      const response = await send(trusting.port, '/echo/forwarded', {
        headers: {
          host: 'api.example.test',
          'x-forwarded-for': '203.0.113.7, 10.1.1.1',
          'x-forwarded-proto': 'https',
          'x-forwarded-host': 'www.example.test',
          'x-forwarded-port': '443',
          'x-real-ip': '203.0.113.7',
        },
      });
      const headers = json(response).headers as Record<string, string>;

      assert.equal(headers['x-real-ip'], '203.0.113.7');
      assert.equal(headers['x-forwarded-for'], '203.0.113.7, 10.1.1.1, 127.0.0.1');
      assert.equal(headers['x-forwarded-proto'], 'https');
      assert.equal(headers['x-forwarded-host'], 'www.example.test');
      assert.equal(headers['x-forwarded-port'], '443');
    } finally {
      await trusting.close();
    }
  });

  it('adds X-Forwarded-For when the client sent none', async () => {
    const response = await send(proxy.port, '/echo/forwarded');
    const headers = json(response).headers as Record<string, string>;

    assert.equal(headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(headers.host, `127.0.0.1:${proxy.port}`);
    assert.equal(headers['x-forwarded-host'], `127.0.0.1:${proxy.port}`);
  });

  it('strips hop-by-hop request headers', async () => {
    const response = await sendRaw(
      proxy.port,
      [
        'GET /echo/hop HTTP/1.1',
        'Host: api.test',
        'Connection: close, X-Hop-One',
        'Connection: X-Hop-Two',
        'Keep-Alive: timeout=5',
        'Proxy-Connection: keep-alive',
        'TE: trailers',
        'Trailer: x-checksum',
        'Upgrade: h2c',
        'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA',
        'Proxy-Authorization: Basic eDp5',
        'X-Hop-One: 1',
        'X-Hop-Two: 2',
        'X-Kept: yes',
        '',
        '',
      ].join('\r\n'),
    );
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as {
      headers: Record<string, string>;
    };
    const received = Object.keys(body.headers);

    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    for (const name of [
      'keep-alive',
      'proxy-connection',
      'trailer',
      'upgrade',
      'http2-settings',
      'proxy-authorization',
      'x-hop-one',
      'x-hop-two',
    ]) {
      assert.ok(!received.includes(name), `${name} reached the upstream`);
    }
    // undici adds its own `connection: keep-alive` for the upstream hop.
    assert.equal(body.headers.connection, 'keep-alive');
    // The client accepts trailers and the proxy forwards them, so it says so upstream.
    assert.equal(body.headers.te, 'trailers');
    assert.equal(body.headers['x-kept'], 'yes');
  });

  it('strips hop-by-hop response headers', async () => {
    const sockets = new Set<Socket>();
    const raw = createNetServer((socket) => {
      sockets.add(socket);
      socket.once('data', () => {
        socket.end(
          [
            'HTTP/1.1 200 OK',
            'Connection: close, X-Up-Hop',
            'Keep-Alive: timeout=5',
            'Proxy-Authenticate: Basic realm="x"',
            'Proxy-Connection: keep-alive',
            'Trailer: x-checksum',
            'X-Up-Hop: 1',
            'X-Kept: yes',
            'Content-Length: 2',
            '',
            'ok',
          ].join('\r\n'),
        );
      });
    });
    const port = await listenNet(raw);
    try {
      proxy.publish([{ name: 'raw', path: '/raw', upstream: 'raw' }], [upstreamAt('raw', port)]);

      const response = await sendRaw(
        proxy.port,
        'GET /raw HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n',
      );
      const names = rawHeaderNames(response);

      assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(response.endsWith('\r\n\r\nok'));
      for (const name of ['keep-alive', 'proxy-authenticate', 'proxy-connection', 'trailer']) {
        assert.ok(!names.includes(name), `${name} reached the client`);
      }
      assert.ok(!names.includes('x-up-hop'), 'x-up-hop reached the client');
      assert.ok(names.includes('x-kept'));
      // The only Connection header is the one Node.js writes for the client hop.
      assert.deepEqual(
        names.filter((name) => name === 'connection'),
        ['connection'],
      );
      assert.match(response, /\r\nConnection: close\r\n/i);
    } finally {
      for (const socket of sockets) {
        socket.destroy();
      }
      raw.close();
      proxy.publish(
        [{ name: 'echo', path: '/echo/*', upstream: 'echo' }],
        [upstreamAt('echo', echo.port)],
      );
    }
  });

  for (const sized of [false, true]) {
    const name = sized
      ? 'streams a sized response with backpressure'
      : 'streams a large response with backpressure';
    it(name, async () => {
      const chunkSize = 64 * 1024;
      const total = 64 * 1024 * 1024;
      let written = 0;
      const big = await startHttpServer((_req, res) => {
        const chunk = Buffer.alloc(chunkSize, 0x61);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          ...(sized ? { 'content-length': String(total) } : {}),
        });
        const pump = (): void => {
          while (written < total) {
            written += chunkSize;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
      });
      try {
        proxy.publish(
          [{ name: 'big', path: '/big', upstream: 'big' }],
          [upstreamAt('big', big.port)],
        );
        const req = httpRequest({
          host: '127.0.0.1',
          port: proxy.port,
          path: '/big',
          agent: false,
        });
        req.end();
        const [res] = (await within(once(req, 'response'), 'the large response')) as [
          IncomingMessage,
        ];

        // The client reads nothing for a while, so the upstream must stall far short of the total.
        res.pause();
        await sleep(500);
        const writtenWhilePaused = written;
        let received = 0;
        res.on('data', (chunk: Buffer) => {
          received += chunk.length;
        });
        res.resume();
        await within(once(res, 'end'), 'the end of the large response', 20_000);

        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['content-length'], sized ? String(total) : undefined);
        assert.ok(
          writtenWhilePaused < total / 2,
          `upstream wrote ${writtenWhilePaused} of ${total} bytes while the client was paused`,
        );
        assert.equal(received, total);
      } finally {
        await big.close();
      }
    });
  }
});
