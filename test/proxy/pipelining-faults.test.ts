import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RoutingTable } from '../../data-plane/table.js';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  eventually,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Maximum time a connection may stay open after a request body failed, in milliseconds. */
const CLOSE_BOUND_MS = 6_000;
/** Body size of the upstream's response to `/app/stream`, far larger than the socket buffers. */
const STREAM_BYTES = 64 * 1024 * 1024;
const STREAM_CHUNK = Buffer.alloc(64 * 1024, 'a');

/** Chunk size line that Node.js fails to parse, with HPE_INVALID_CHUNK_SIZE. */
const INVALID_CHUNK = 'ZZZ\r\n\r\n';

/** Returns an HTTP/1.1 GET of `path` with the header lines in `extra`. */
function get(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: a\r\n${extra}\r\n`;
}

/** Returns the head and first chunk of a chunked POST to `path`. */
function chunkedPost(path: string, extra = ''): string {
  return `POST ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n${extra}\r\n5\r\nhello\r\n`;
}

/** What a raw client received on one connection. */
interface Received {
  text: string;
  /** Status codes of the responses, in order. */
  statuses: number[];
  /** True when the proxy closed the connection. */
  closed: boolean;
  /** Milliseconds from the first write to the close, or to the end of the wait. */
  elapsedMs: number;
}

/** Options of {@link pipeline}. */
interface PipelineOptions {
  /** Time between two writes, in milliseconds. */
  pauseMs?: number;
  /** Maximum wait for the proxy to close the connection after the last write. */
  waitMs?: number;
}

/**
 * Writes `parts` on a new connection and collects every byte until the proxy closes it or
 * `waitMs` passes. The client never half-closes, so only the proxy can end the connection.
 */
async function pipeline(
  port: number,
  parts: string[],
  options: PipelineOptions = {},
): Promise<Received> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {
    // A reset still counts as a close; the tests check what arrived.
  });
  let closed = false;
  const closing = new Promise<void>((resolve) =>
    socket.once('close', () => {
      closed = true;
      resolve();
    }),
  );
  const start = performance.now();
  for (const [index, part] of parts.entries()) {
    if (index > 0) await sleep(options.pauseMs ?? 0);
    socket.write(part);
  }
  await Promise.race([closing, sleep(options.waitMs ?? CLOSE_BOUND_MS)]);
  const elapsedMs = performance.now() - start;
  socket.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  const statuses = [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  return { text, statuses, closed, elapsedMs };
}

let proxy: ProxyFixture;
let upstream: RunningServer;
/** The only target of the main proxy's upstream. */
let appTarget: UpstreamTarget;
/** Paths of the requests the upstream received, since the last test started. */
const forwarded: string[] = [];
/** Paths of the uploads whose body the upstream received in full. */
const completeUploads: string[] = [];
/** Paths of the uploads that closed before their body was complete. */
const abortedUploads: string[] = [];
/** Paths of the upstream responses that closed before they finished. */
const abortedResponses: string[] = [];
/** Pending delayed upstream responses, cleared when the suite ends. */
const timers = new Set<NodeJS.Timeout>();

/** Streams STREAM_BYTES to the client of `res`, as fast as it reads. */
function pump(res: ServerResponse): void {
  let sent = 0;
  const write = (): void => {
    while (sent < STREAM_BYTES && !res.destroyed) {
      sent += STREAM_CHUNK.length;
      if (!res.write(STREAM_CHUNK)) return void res.once('drain', write);
    }
    if (!res.destroyed) res.end();
  };
  write();
}

/** Records whether the body of an upload arrived in full. */
function trackUpload(req: IncomingMessage, path: string): void {
  req.once('end', () => completeUploads.push(path));
  req.once('close', () => {
    if (!req.complete) abortedUploads.push(path);
  });
  req.resume();
}

/** Runs `action` after `ms` milliseconds, unless the suite ends first. */
function later(ms: number, action: () => void): void {
  const timer = setTimeout(() => {
    timers.delete(timer);
    action();
  }, ms);
  timers.add(timer);
}

/**
 * Handles the upstream's requests. `/app/stream` sends STREAM_BYTES. `/app/upload` responds
 * once the whole body arrived. `/app/hints` sends 103 at once and the response once the body
 * arrived. `/app/drip` sends the head and a chunk at once, then a byte every 50 ms until the
 * body arrived, without Content-Length. `/app/not-modified` sends 304 and other paths get
 * `ok <url>`, both after `?ms=` milliseconds.
 */
function handleUpstream(req: IncomingMessage, res: ServerResponse): void {
  forwarded.push(req.url ?? '');
  const url = new URL(req.url ?? '/', 'http://upstream');
  const path = url.pathname;
  res.on('close', () => {
    if (!res.writableFinished) abortedResponses.push(path);
  });
  if (req.method === 'POST') {
    trackUpload(req, path);
  } else {
    req.resume();
  }
  const ms = Number(url.searchParams.get('ms') ?? 0);

  switch (path) {
    case '/app/stream':
      pump(res);
      return;
    case '/app/upload':
      req.once('end', () => res.end('uploaded'));
      return;
    case '/app/hints':
      res.writeEarlyHints({ link: '</style.css>; rel=preload' });
      req.once('end', () => res.end('hinted'));
      return;
    case '/app/drip': {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('drip');
      const timer = setInterval(() => res.write('.'), 50);
      res.once('close', () => clearInterval(timer));
      req.once('end', () => {
        clearInterval(timer);
        res.end('done');
      });
      return;
    }
    case '/app/not-modified':
      later(ms, () => {
        res.writeHead(304, { etag: '"x"' });
        res.end();
      });
      return;
    default:
      later(ms, () => res.end(`ok ${req.url}`));
  }
}

/** Returns the number of connections that `server` has open. */
async function connectionCount(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
  );
}

/** Waits up to `ms` for the open connections of `server` to drop to 0 and returns the count. */
async function settledConnections(server: Server, ms = 2_000): Promise<number> {
  const deadline = performance.now() + ms;
  let count = await connectionCount(server);
  while (count > 0 && performance.now() < deadline) {
    await sleep(50);
    count = await connectionCount(server);
  }
  return count;
}

/** Returns the only target of the upstream `app` in `table`. */
function targetOf(table: RoutingTable): UpstreamTarget {
  const match = table.router.find('GET', undefined, '/app/x');
  assert.equal(match.kind, 'found');
  const balancer = match.value.balancer;
  assert.ok(balancer !== undefined, 'route without balancer');
  return balancer.targets[0];
}

/** Publishes the route `/app/*` to the upstream on `fixture` and returns its target. */
function publishApp(fixture: ProxyFixture): UpstreamTarget {
  return targetOf(
    fixture.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    ),
  );
}

/**
 * Waits up to `ms` for the requests in flight on `target` to drop to 0 and returns the count. The
 * least-request balancer picks targets by this count.
 */
async function settledActive(target: UpstreamTarget, ms = 2_000): Promise<number> {
  const deadline = performance.now() + ms;
  while (target.state.active > 0 && performance.now() < deadline) await sleep(50);
  return target.state.active;
}

/** Returns the messages of the lines at level error (50) or above that `fixture` logged. */
function errorLines(fixture: ProxyFixture): string[] {
  return fixture.logs.filter((line) => line.level >= 50).map((line) => line.msg);
}

/** Asserts that `fixture` has no client connection or upstream request open and logged no error. */
async function assertReleased(fixture: ProxyFixture, target: UpstreamTarget): Promise<void> {
  assert.equal(await settledConnections(fixture.server), 0, 'client connections still open');
  assert.equal(await settledActive(target), 0, 'upstream requests still counted in flight');
  assert.deepEqual(errorLines(fixture), []);
}

before(async () => {
  upstream = await startHttpServer(handleUpstream);
  proxy = await startProxy();
  appTarget = publishApp(proxy);
});

beforeEach(() => {
  forwarded.length = 0;
  completeUploads.length = 0;
  abortedUploads.length = 0;
  abortedResponses.length = 0;
});

after(async () => {
  for (const timer of timers) clearTimeout(timer);
  await proxy.close();
  await upstream.close();
});

describe('body error behind pipelined requests', () => {
  it('three queued responses then 400', async () => {
    const queued = get('/app/a?ms=150') + get('/app/b?ms=100') + get('/app/c?ms=50');
    const result = await pipeline(
      proxy.port,
      [queued + chunkedPost('/app/upload'), INVALID_CHUNK],
      {
        pauseMs: 50,
      },
    );

    assert.deepEqual(result.statuses, [200, 200, 200, 400]);
    assert.equal(result.closed, true);
    assert.deepEqual(completeUploads, []);
    await assertReleased(proxy, appTarget);
  });

  it('cuts chunked response in flight', async () => {
    const result = await pipeline(proxy.port, [chunkedPost('/app/drip'), INVALID_CHUNK], {
      pauseMs: 200,
    });

    assert.equal(result.closed, true);
    assert.ok(!result.text.endsWith('0\r\n\r\n'), 'the cut response ends like a complete one');
    await assertReleased(proxy, appTarget);
    assert.ok(await eventually(() => abortedUploads.length > 0), 'upload not aborted upstream');
    assert.deepEqual(completeUploads, []);
    assert.deepEqual(abortedUploads, ['/app/drip']);
  });

  it('103 on queued response', async () => {
    const result = await pipeline(
      proxy.port,
      [get('/app/slow?ms=300') + chunkedPost('/app/hints'), INVALID_CHUNK],
      { pauseMs: 100 },
    );

    assert.equal(result.statuses[0], 200);
    assert.equal(result.statuses.at(-1), 400);
    assert.equal(result.closed, true);
    assert.deepEqual(completeUploads, []);
    await assertReleased(proxy, appTarget);
  });

  it('HEAD and 304 queued ahead', async () => {
    const head = 'HEAD /app/head?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n';
    const conditional = get('/app/not-modified?ms=50', 'If-None-Match: "x"\r\n');
    const result = await pipeline(
      proxy.port,
      [head + conditional + chunkedPost('/app/upload'), INVALID_CHUNK],
      { pauseMs: 50 },
    );

    assert.deepEqual(result.statuses, [200, 304, 400]);
    assert.equal(result.closed, true);
    await assertReleased(proxy, appTarget);
  });

  it('client closes with bad chunk', async () => {
    for (let i = 0; i < 20; i++) {
      const socket = connect(proxy.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write(get('/app/slow?ms=50') + chunkedPost('/app/upload'));
      await sleep(20);
      socket.write(INVALID_CHUNK);
      if (i % 2 === 0) {
        socket.destroy();
      } else {
        setImmediate(() => socket.destroy());
      }
    }

    await assertReleased(proxy, appTarget);
    assert.deepEqual(completeUploads, []);
  });

  it('forty concurrent connections', async () => {
    const runs: Array<Promise<Received>> = [];
    for (let i = 0; i < 40; i++) {
      const upload = chunkedPost(i % 2 === 0 ? '/app/drip' : '/app/upload');
      const parts = [get(`/app/a?ms=${(i * 7) % 50}`) + upload, INVALID_CHUNK];
      runs.push(pipeline(proxy.port, parts, { pauseMs: i % 30 }));
    }
    const results = await Promise.all(runs);

    for (const result of results) {
      assert.equal(result.closed, true);
      assert.equal(result.statuses[0], 200);
    }
    assert.deepEqual(completeUploads, []);
    await assertReleased(proxy, appTarget);
  });

  it('unread stream ahead aborts upload', async () => {
    const socket = connect(proxy.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.pause();
    await once(socket, 'connect');
    socket.write(get('/app/stream') + chunkedPost('/app/upload'));
    await sleep(200);
    socket.write(INVALID_CHUNK);

    assert.ok(await eventually(() => abortedUploads.length > 0), 'upload not aborted upstream');
    assert.deepEqual(abortedUploads, ['/app/upload']);
    socket.destroy();
    assert.ok(await eventually(() => abortedResponses.length === 2), 'stream still running');
    assert.deepEqual(abortedResponses.sort(), ['/app/stream', '/app/upload']);
    await assertReleased(proxy, appTarget);
  });
});

describe('body error behind unread response', () => {
  let sending: ProxyFixture;

  before(async () => {
    sending = await startProxy({}, { sendTimeoutMs: 500 });
    publishApp(sending);
  });

  after(async () => {
    await sending.close();
  });

  // The send timeout bounds a connection whose client reads nothing, body error or not.
  it('unread queue closes after body error', async () => {
    const socket = connect(sending.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.pause();
    await once(socket, 'connect');
    const closed = new Promise((resolve) => socket.once('close', resolve));
    try {
      socket.write(get('/app/stream') + chunkedPost('/app/upload'));
      await sleep(200);
      socket.write(INVALID_CHUNK);

      assert.ok(
        await eventually(() => abortedResponses.length === 2, CLOSE_BOUND_MS),
        `stream still running ${CLOSE_BOUND_MS} ms after the bad chunk`,
      );
      assert.deepEqual(abortedResponses.sort(), ['/app/stream', '/app/upload']);
      // A paused client notices the reset only once it reads again.
      socket.resume();
      await within(closed, 'the client to see the closed connection');
    } finally {
      socket.destroy();
    }
  });
});

describe('body error with one pool connection', () => {
  let limited: ProxyFixture;
  let limitedTarget: UpstreamTarget;

  before(async () => {
    limited = await startProxy({ connections: 1 });
    limitedTarget = publishApp(limited);
  });

  after(async () => {
    await limited.close();
  });

  it('upload waiting for the pool', async () => {
    const result = await pipeline(
      limited.port,
      [get('/app/slow?ms=400') + chunkedPost('/app/upload'), INVALID_CHUNK],
      { pauseMs: 100 },
    );

    assert.deepEqual(result.statuses, [200, 400]);
    assert.equal(result.closed, true);
    await sleep(300);
    assert.deepEqual(completeUploads, []);
    const next = await pipeline(limited.port, [get('/app/next', 'Connection: close\r\n')], {
      waitMs: 2_000,
    });
    assert.deepEqual(next.statuses, [200]);
    await assertReleased(limited, limitedTarget);
  });
});

describe('body timeout behind pipelined requests', () => {
  let timing: ProxyFixture;
  let timingTarget: UpstreamTarget;

  before(async () => {
    // Node.js checks the request timeout every 500 ms here, so the 408 comes 1 to 1.5 s after
    // the request started.
    timing = await startProxy({}, { headersTimeoutMs: 500, requestTimeoutMs: 1_000 });
    timingTarget = publishApp(timing);
  });

  after(async () => {
    await timing.close();
  });

  it('cuts chunked response in flight', async () => {
    const result = await pipeline(timing.port, [chunkedPost('/app/drip')]);

    assert.equal(result.closed, true);
    assert.ok(result.elapsedMs < CLOSE_BOUND_MS, `closed after ${result.elapsedMs} ms`);
    assert.ok(await eventually(() => abortedUploads.length > 0), 'upload not aborted upstream');
    assert.deepEqual(completeUploads, []);
    await assertReleased(timing, timingTarget);
  });

  it('cut of close-delimited response resets', async () => {
    // An HTTP/1.0 client gets the upstream's response without Content-Length as a body that
    // ends with the connection. Only a reset shows that client that the body was cut, as the
    // proxy does when the upstream fails mid-body (`resetConnection` in exchange.ts).
    const socket = connect(timing.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let ending = 'none';
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      if (ending === 'none') ending = 'end';
    });
    socket.on('error', (err: Error & { code?: string }) => {
      if (ending === 'none') ending = `error ${err.code}`;
    });
    // `once(socket, 'close')` would reject at the reset's 'error' event.
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write('POST /app/drip HTTP/1.0\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello');
    await within(closed, 'the proxy to close the connection', CLOSE_BOUND_MS);
    assert.ok(await eventually(() => abortedUploads.length > 0), 'upload not aborted upstream');

    const text = Buffer.concat(chunks).toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(text, /content-length:/i);
    assert.deepEqual(abortedUploads, ['/app/drip']);
    assert.equal(ending, 'error ECONNRESET', 'the cut body ended with FIN, like a complete one');
  });
});

describe('body error with Expect: 100-continue', () => {
  let expecting: ProxyFixture;
  let expectingTarget: UpstreamTarget;

  beforeEach(async () => {
    expecting = await startProxy();
    expectingTarget = publishApp(expecting);
  });

  afterEach(async () => {
    await expecting.close();
  });

  it('bad chunk releases the target', async () => {
    const upload = chunkedPost('/app/upload', 'Expect: 100-continue\r\n');
    const result = await pipeline(expecting.port, [upload, INVALID_CHUNK], { pauseMs: 100 });

    assert.equal(result.closed, true);
    assert.ok(await eventually(() => abortedUploads.length > 0), 'upload not aborted upstream');
    assert.deepEqual(completeUploads, []);
    assert.deepEqual(abortedUploads, ['/app/upload']);
    // The exchange ends without taking its request off the target's in-flight count.
    assert.equal(await settledActive(expectingTarget), 0, 'upstream request still counted');
  });

  it('bad chunk behind slow response', async () => {
    const upload = chunkedPost('/app/upload', 'Expect: 100-continue\r\n');
    const result = await pipeline(
      expecting.port,
      [get('/app/slow?ms=300') + upload, INVALID_CHUNK],
      { pauseMs: 100 },
    );

    // The documented exception: the connection closes at once, without the earlier response.
    assert.equal(result.closed, true);
    assert.deepEqual(completeUploads, []);
    assert.equal(await settledActive(expectingTarget), 0, 'upstream requests still counted');
  });
});
