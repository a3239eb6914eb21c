import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_REQUESTS_AFTER_REJECTION } from '../../data-plane/proxy/pipelining.js';
import {
  openRawClient,
  pausedClient,
  pipeline,
  startHttpServer,
  startProxy,
  streamBody,
  UploadRecorder,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Default delay of the upstream's response to `/app/slow`, in milliseconds. */
const SLOW_MS = 200;
/** Body size of the upstream's response to `/app/big`, larger than the socket buffers. */
const BIG_BYTES = 4 * 1024 * 1024;
/**
 * Body size of the upstream's response to `/app/stream`, far larger than the socket buffers, so
 * that the responses behind it stay queued while the client does not read.
 */
const STREAM_BYTES = 64 * 1024 * 1024;

const VALID = 'GET /app/one HTTP/1.1\r\nHost: a\r\n\r\n';
const SLOW = 'GET /app/slow HTTP/1.1\r\nHost: a\r\n\r\n';
const AFTER = 'GET /app/after HTTP/1.1\r\nHost: a\r\n\r\n';
const BIG = 'GET /app/big HTTP/1.1\r\nHost: a\r\n\r\n';
const STREAM = 'GET /app/stream HTTP/1.1\r\nHost: a\r\n\r\n';
const UPGRADE =
  'GET /app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

/** Body size of the upstream's response to `/app/partial`. */
const PARTIAL_BYTES = 100;

/**
 * Head and first chunk of a chunked POST to `path`. The upstream responds to `/app/upload` once
 * the whole body arrived and to `/app/early` right away. To `/app/partial` it sends the head and
 * the first bytes right away and the rest once the whole body arrived.
 */
function chunkedPost(path: string): string {
  return `POST ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`;
}

/** Chunk size line that Node.js fails to parse, with HPE_INVALID_CHUNK_SIZE. */
const INVALID_CHUNK = 'ZZZ\r\n\r\n';

/**
 * Requests that get 400 and `Connection: close`. The proxy rejects the first three. Node.js
 * fails to parse the rest: a bare LF, and Content-Length with Transfer-Encoding.
 */
const REJECTED: Array<[string, string]> = [
  ['two Host headers', 'GET /app/two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['no Host header', 'GET /app/two HTTP/1.1\r\n\r\n'],
  [
    'Transfer-Encoding in HTTP/1.0',
    'POST /app/two HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  ],
  ['a bare LF', 'GET /app/two HTTP/1.1\nHost: a\n\n'],
  [
    'Content-Length with Transfer-Encoding',
    'POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  ],
];

const DUPLICATE_HOST = REJECTED[0][1];

/** Returns the head of the response with `status` in `text`, lower-cased. */
function headOf(text: string, status: number): string {
  const start = text.indexOf(`HTTP/1.1 ${status} `);
  assert.notEqual(start, -1, `no ${status} response`);
  return text.slice(start, text.indexOf('\r\n\r\n', start)).toLowerCase();
}

/** Returns the heads of every response in `text`, in order and lower-cased. */
function headsOf(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 \d{3} [^]*?\r\n\r\n/g)].map((m) => m[0].toLowerCase());
}

/** Asserts that `head` carries `Connection: close`. */
function assertClosing(head: string): void {
  assert.match(head, /\r\nconnection: close(\r\n|$)/);
}

let proxy: ProxyFixture;
let upstream: RunningServer;
/** Paths of the requests the upstream received, since the last test started. */
const forwarded: string[] = [];
/** Paths of the uploads the upstream read, by how their body ended. */
const uploads = new UploadRecorder();
/** Upstream responses to `/app/stream` that started, and those that closed unfinished. */
const streams = { started: 0, aborted: 0 };
/** Pending delayed upstream responses, cleared when the suite ends. */
const timers = new Set<NodeJS.Timeout>();

before(async () => {
  upstream = await startHttpServer((req, res) => {
    forwarded.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://upstream');
    if (url.pathname === '/app/stream') {
      streams.started++;
      res.on('close', () => {
        if (!res.writableFinished) streams.aborted++;
      });
      req.resume();
      streamBody(res, STREAM_BYTES);
      return;
    }
    if (url.pathname === '/app/upload') {
      uploads.track(req, url.pathname);
      req.once('end', () => res.end('uploaded'));
      return;
    }
    if (url.pathname === '/app/early') {
      uploads.track(req, url.pathname);
      res.end('early');
      return;
    }
    if (url.pathname === '/app/partial') {
      uploads.track(req, url.pathname);
      res.writeHead(200, { 'content-length': String(PARTIAL_BYTES) });
      res.write('partial');
      req.once('end', () => res.end(Buffer.alloc(PARTIAL_BYTES - 'partial'.length, 'a')));
      return;
    }

    req.resume();
    const delay = url.pathname === '/app/slow' ? Number(url.searchParams.get('ms') ?? SLOW_MS) : 0;
    const timer = setTimeout(() => {
      timers.delete(timer);
      res.end(url.pathname === '/app/big' ? Buffer.alloc(BIG_BYTES, 'a') : `ok ${req.url}`);
    }, delay);
    timers.add(timer);
  });
  upstream.server.on('upgrade', (_req, socket: Socket) => {
    socket.on('error', () => {});
    // The server allows half-open connections, so the tunnel's end gets an end in return.
    socket.on('end', () => socket.end());
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
  });
  proxy = await startProxy();
  proxy.publish(
    [{ name: 'app', path: '/app/*', upstream: 'app' }],
    [upstreamAt('app', upstream.port)],
  );
});

beforeEach(() => {
  forwarded.length = 0;
  uploads.clear();
});

after(async () => {
  for (const timer of timers) clearTimeout(timer);
  await proxy.close();
  await upstream.close();
});

/** Waits long enough for a forwarded request to reach the upstream, then returns the paths. */
async function forwardedPaths(): Promise<string[]> {
  await sleep(50);
  return [...forwarded];
}

describe('pipelining after a rejected request', () => {
  for (const [name, rejected] of REJECTED) {
    it(`valid, rejected, valid: ${name}`, async () => {
      const result = await pipeline(proxy.port, [VALID + rejected + AFTER]);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.match(result.text, /ok \/app\/one/);
      assertClosing(headOf(result.text, 400));
      assert.deepEqual(await forwardedPaths(), ['/app/one']);
    });

    it(`slow, rejected, valid: ${name}`, async () => {
      const result = await pipeline(proxy.port, [SLOW + rejected + AFTER]);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.match(result.text, /ok \/app\/slow/);
      assertClosing(headOf(result.text, 400));
      assert.deepEqual(await forwardedPaths(), ['/app/slow']);
    });
  }

  it('slow response before rejection', async () => {
    const result = await pipeline(proxy.port, [SLOW + DUPLICATE_HOST + AFTER]);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(result.text, /ok \/app\/slow/);
    assertClosing(headOf(result.text, 400));
    assert.ok(
      result.text.indexOf('ok /app/slow') < result.text.indexOf('HTTP/1.1 400 '),
      'the 400 came before the slow response',
    );
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('rejected then valid', async () => {
    const result = await pipeline(proxy.port, [DUPLICATE_HOST + AFTER]);

    assert.deepEqual(result.statuses, [400]);
    assertClosing(headOf(result.text, 400));
    assert.deepEqual(await forwardedPaths(), []);
  });

  it('valid then rejected', async () => {
    const result = await pipeline(proxy.port, [VALID + DUPLICATE_HOST]);

    assert.deepEqual(result.statuses, [200, 400]);
    assertClosing(headOf(result.text, 400));
    assert.deepEqual(await forwardedPaths(), ['/app/one']);
  });

  it('417 stays in order', async () => {
    const expectation = 'GET /app/x HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n';
    const result = await pipeline(proxy.port, [SLOW + expectation + DUPLICATE_HOST + AFTER]);

    assert.deepEqual(result.statuses, [200, 417, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('upgrade after rejection', async () => {
    const result = await pipeline(proxy.port, [SLOW + DUPLICATE_HOST + UPGRADE]);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('upgrade after large response', async () => {
    const result = await pipeline(proxy.port, [BIG + DUPLICATE_HOST + UPGRADE]);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(headOf(result.text, 200), new RegExp(`\r\ncontent-length: ${BIG_BYTES}\r\n`));
    const bodyStart = result.text.indexOf('\r\n\r\n') + 4;
    assert.equal(result.text.indexOf('HTTP/1.1 400 '), bodyStart + BIG_BYTES);
    assert.deepEqual(await forwardedPaths(), ['/app/big']);
  });

  it('CONNECT after rejection', async () => {
    const result = await pipeline(proxy.port, [
      SLOW + DUPLICATE_HOST + 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n',
    ]);

    assert.deepEqual(result.statuses, [200, 400]);
    assert.deepEqual(await forwardedPaths(), ['/app/slow']);
  });

  it('long tail after rejection', async () => {
    let parsed = 0;
    const countRequest = (): void => {
      parsed++;
    };
    proxy.server.on('request', countRequest);
    try {
      // About 700 KB of requests, far more than one read of the socket returns.
      const tail = AFTER.repeat(20_000);
      const result = await pipeline(proxy.port, [SLOW + DUPLICATE_HOST + tail]);

      assert.deepEqual(result.statuses, [200, 400]);
      assert.deepEqual(await forwardedPaths(), ['/app/slow']);
      assert.ok(parsed < MAX_REQUESTS_AFTER_REJECTION, `${parsed} requests parsed`);
    } finally {
      proxy.server.off('request', countRequest);
    }
  });

  it('tail past limit destroys connection', async () => {
    // Resuming the proxy's side of the connection replaces whatever makes Node.js read
    // again after the rejection, so the tail grows past the limit.
    const serverSockets: Socket[] = [];
    const keep = (socket: Socket): void => {
      serverSockets.push(socket);
    };
    proxy.server.on('connection', keep);
    // The proxy resets the connection; the test checks that it closed.
    const { socket, closed } = openRawClient(
      proxy.port,
      'GET /app/slow?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n' + DUPLICATE_HOST,
    );
    try {
      const piece = AFTER.repeat(500);
      for (let i = 0; i < 100 && !socket.destroyed; i++) {
        socket.write(piece);
        await sleep(5);
        for (const serverSocket of serverSockets) serverSocket.resume();
      }
      await within(closed, 'the proxy to close the connection', 1_500);
    } finally {
      proxy.server.off('connection', keep);
      socket.destroy();
    }

    assert.deepEqual(await forwardedPaths(), ['/app/slow?ms=3000']);
    assert.ok(
      proxy.logs.some((line) => line.msg.startsWith('client connection destroyed: too many')),
      'no log line about the destroyed connection',
    );
  });
});

describe('queued pipelined responses', () => {
  it('upgrade waits for queued responses', async () => {
    const result = await pipeline(proxy.port, [SLOW + UPGRADE], { waitMs: SLOW_MS + 300 });

    // The 101 switches the connection to the tunnel, so a 200 after it lands inside the tunnel.
    assert.deepEqual(result.statuses, [200, 101]);
  });

  it('body error keeps earlier responses', async () => {
    const result = await pipeline(proxy.port, [SLOW + chunkedPost('/app/upload'), INVALID_CHUNK], {
      pauseMs: 100,
    });

    // The first request was complete and valid before the second one's body failed to parse.
    assert.deepEqual(result.statuses, [200, 400]);
    assert.match(result.text, /ok \/app\/slow/);
    assertClosing(headOf(result.text, 400));
    assert.deepEqual(await forwardedPaths(), ['/app/slow', '/app/upload']);
    assert.deepEqual(uploads.complete, []);
    assert.deepEqual(uploads.aborted, ['/app/upload']);
  });

  it('body error after early response', async () => {
    const result = await pipeline(proxy.port, [SLOW + chunkedPost('/app/early'), INVALID_CHUNK], {
      pauseMs: 100,
    });

    // The upstream responded before the body failed, so that complete response is sent too.
    assert.deepEqual(result.statuses, [200, 200]);
    assert.match(result.text, /ok \/app\/slow/);
    assert.match(result.text, /early$/);
    assertClosing(headsOf(result.text)[1]);
    assert.deepEqual(uploads.complete, []);
  });

  it('body error cuts started response', async () => {
    const result = await pipeline(proxy.port, [SLOW + chunkedPost('/app/partial'), INVALID_CHUNK], {
      pauseMs: 100,
    });

    // The upstream response had started, so none of it is sent. The connection closes where it
    // would begin, right after the complete response before it.
    assert.deepEqual(result.statuses, [200]);
    assert.ok(result.text.endsWith('ok /app/slow'), 'bytes follow the first response');
    assert.equal(result.closed, true);
    assert.deepEqual(await forwardedPaths(), ['/app/slow', '/app/partial']);
    assert.deepEqual(uploads.complete, []);
    assert.deepEqual(uploads.aborted, ['/app/partial']);
  });

  it('body error without queued responses', async () => {
    const result = await pipeline(proxy.port, [chunkedPost('/app/upload'), INVALID_CHUNK], {
      pauseMs: 100,
    });

    assert.deepEqual(result.statuses, [400]);
    assertClosing(headOf(result.text, 400));
    assert.deepEqual(await forwardedPaths(), ['/app/upload']);
    assert.deepEqual(uploads.complete, []);
    assert.deepEqual(uploads.aborted, ['/app/upload']);
  });

  it('body timeout keeps earlier responses', async () => {
    // Node.js checks the request timeout every 500 ms here, so the 408 comes 1 to 1.5 s after
    // the upload started, while the response before it is still on its way.
    const timing = await startProxy({}, { headersTimeoutMs: 500, requestTimeoutMs: 1_000 });
    timing.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
    try {
      const upload = 'POST /app/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello';
      const result = await pipeline(timing.port, [
        'GET /app/slow?ms=2500 HTTP/1.1\r\nHost: a\r\n\r\n' + upload,
      ]);

      assert.deepEqual(result.statuses, [200, 408]);
      assert.match(result.text, /ok \/app\/slow\?ms=2500/);
      assertClosing(headOf(result.text, 408));
      assert.deepEqual(uploads.complete, []);
      assert.deepEqual(uploads.aborted, ['/app/upload']);
    } finally {
      await timing.close();
    }
  });

  it('client close aborts queued upstream responses', async () => {
    streams.started = 0;
    streams.aborted = 0;
    const { socket } = await pausedClient(proxy.port);
    socket.write(STREAM.repeat(4));
    await within(
      (async () => {
        while (streams.started < 4) await sleep(20);
      })(),
      'four upstream requests',
    );
    await sleep(200);
    socket.destroy();

    await sleep(2_000);
    assert.equal(streams.aborted, 4, 'upstream responses still held after the client closed');
  });
});
