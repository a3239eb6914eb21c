import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  eventually,
  pausedClient,
  pipeline,
  startHttpServer,
  startProxy,
  streamBody,
  UploadRecorder,
  within,
  type PipelineResult,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** Maximum time a connection may stay open after a request body failed, in milliseconds. */
const CLOSE_BOUND_MS = 6_000;
/** Body size of the upstream's response to `/app/stream`, far larger than the socket buffers. */
const STREAM_BYTES = 64 * 1024 * 1024;

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

let proxy: ProxyFixture;
let upstream: RunningServer;
/** The only target of the main proxy's upstream. */
let appTarget: UpstreamTarget;
/** Paths of the requests the upstream received, since the last test started. */
const forwarded: string[] = [];
/** Paths of the uploads the upstream read, by how their body ended. */
const uploads = new UploadRecorder();
/** Paths of the upstream responses that closed before they finished. */
const abortedResponses: string[] = [];
/** Pending delayed upstream responses, cleared when the suite ends. */
const timers = new Set<NodeJS.Timeout>();

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
    uploads.track(req, path);
  } else {
    req.resume();
  }
  const ms = Number(url.searchParams.get('ms') ?? 0);

  switch (path) {
    case '/app/stream':
      streamBody(res, STREAM_BYTES);
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

/** Waits up to `ms` for the client connections of `fixture` to drop to 0 and returns the count. */
async function settledConnections(fixture: ProxyFixture, ms = 2_000): Promise<number> {
  const deadline = performance.now() + ms;
  let count = await fixture.connectionCount();
  while (count > 0 && performance.now() < deadline) {
    await sleep(50);
    count = await fixture.connectionCount();
  }
  return count;
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
  assert.equal(await settledConnections(fixture), 0, 'client connections still open');
  assert.equal(await settledActive(target), 0, 'upstream requests still counted in flight');
  assert.deepEqual(errorLines(fixture), []);
}

before(async () => {
  upstream = await startHttpServer(handleUpstream);
  proxy = await startProxy();
  appTarget = proxy.publishOne('app', upstream.port);
});

beforeEach(() => {
  forwarded.length = 0;
  uploads.clear();
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
        waitMs: CLOSE_BOUND_MS,
      },
    );

    assert.deepEqual(result.statuses, [200, 200, 200, 400]);
    assert.equal(result.closed, true);
    assert.deepEqual(uploads.complete, []);
    await assertReleased(proxy, appTarget);
  });

  it('cuts chunked response in flight', async () => {
    const result = await pipeline(proxy.port, [chunkedPost('/app/drip'), INVALID_CHUNK], {
      pauseMs: 200,
      waitMs: CLOSE_BOUND_MS,
    });

    assert.equal(result.closed, true);
    assert.ok(!result.text.endsWith('0\r\n\r\n'), 'the cut response ends like a complete one');
    await assertReleased(proxy, appTarget);
    assert.ok(await eventually(() => uploads.aborted.length > 0), 'upload not aborted upstream');
    assert.deepEqual(uploads.complete, []);
    assert.deepEqual(uploads.aborted, ['/app/drip']);
  });

  it('103 on queued response', async () => {
    const result = await pipeline(
      proxy.port,
      [get('/app/slow?ms=300') + chunkedPost('/app/hints'), INVALID_CHUNK],
      { pauseMs: 100, waitMs: CLOSE_BOUND_MS },
    );

    assert.equal(result.statuses[0], 200);
    assert.equal(result.statuses.at(-1), 400);
    assert.equal(result.closed, true);
    assert.deepEqual(uploads.complete, []);
    await assertReleased(proxy, appTarget);
  });

  it('HEAD and 304 queued ahead', async () => {
    const head = 'HEAD /app/head?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n';
    const conditional = get('/app/not-modified?ms=50', 'If-None-Match: "x"\r\n');
    const result = await pipeline(
      proxy.port,
      [head + conditional + chunkedPost('/app/upload'), INVALID_CHUNK],
      { pauseMs: 50, waitMs: CLOSE_BOUND_MS },
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
    assert.deepEqual(uploads.complete, []);
  });

  it('forty concurrent connections', async () => {
    const runs: Array<Promise<PipelineResult>> = [];
    for (let i = 0; i < 40; i++) {
      const upload = chunkedPost(i % 2 === 0 ? '/app/drip' : '/app/upload');
      const parts = [get(`/app/a?ms=${(i * 7) % 50}`) + upload, INVALID_CHUNK];
      runs.push(pipeline(proxy.port, parts, { pauseMs: i % 30, waitMs: CLOSE_BOUND_MS }));
    }
    const results = await Promise.all(runs);

    for (const result of results) {
      assert.equal(result.closed, true);
      assert.equal(result.statuses[0], 200);
    }
    assert.deepEqual(uploads.complete, []);
    await assertReleased(proxy, appTarget);
  });

  it('unread stream ahead aborts upload', async () => {
    const { socket } = await pausedClient(proxy.port);
    socket.write(get('/app/stream') + chunkedPost('/app/upload'));
    await sleep(200);
    socket.write(INVALID_CHUNK);

    assert.ok(await eventually(() => uploads.aborted.length > 0), 'upload not aborted upstream');
    assert.deepEqual(uploads.aborted, ['/app/upload']);
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
    sending.publishOne('app', upstream.port);
  });

  after(async () => {
    await sending.close();
  });

  // The send timeout bounds a connection whose client reads nothing, body error or not.
  it('unread queue closes after body error', async () => {
    const { socket, closed } = await pausedClient(sending.port);
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
    limitedTarget = limited.publishOne('app', upstream.port);
  });

  after(async () => {
    await limited.close();
  });

  it('upload waiting for the pool', async () => {
    const result = await pipeline(
      limited.port,
      [get('/app/slow?ms=400') + chunkedPost('/app/upload'), INVALID_CHUNK],
      { pauseMs: 100, waitMs: CLOSE_BOUND_MS },
    );

    assert.deepEqual(result.statuses, [200, 400]);
    assert.equal(result.closed, true);
    await sleep(300);
    assert.deepEqual(uploads.complete, []);
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
    timingTarget = timing.publishOne('app', upstream.port);
  });

  after(async () => {
    await timing.close();
  });

  it('cuts chunked response in flight', async () => {
    const result = await pipeline(timing.port, [chunkedPost('/app/drip')], {
      waitMs: CLOSE_BOUND_MS,
    });

    assert.equal(result.closed, true, `connection open ${CLOSE_BOUND_MS} ms after the request`);
    assert.ok(await eventually(() => uploads.aborted.length > 0), 'upload not aborted upstream');
    assert.deepEqual(uploads.complete, []);
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
    assert.ok(await eventually(() => uploads.aborted.length > 0), 'upload not aborted upstream');

    const text = Buffer.concat(chunks).toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(text, /content-length:/i);
    assert.deepEqual(uploads.aborted, ['/app/drip']);
    assert.equal(ending, 'error ECONNRESET', 'the cut body ended with FIN, like a complete one');
  });
});

describe('body error with Expect: 100-continue', () => {
  let expecting: ProxyFixture;
  let expectingTarget: UpstreamTarget;

  beforeEach(async () => {
    expecting = await startProxy();
    expectingTarget = expecting.publishOne('app', upstream.port);
  });

  afterEach(async () => {
    await expecting.close();
  });

  it('bad chunk releases the target', async () => {
    const upload = chunkedPost('/app/upload', 'Expect: 100-continue\r\n');
    const result = await pipeline(expecting.port, [upload, INVALID_CHUNK], {
      pauseMs: 100,
      waitMs: CLOSE_BOUND_MS,
    });

    assert.equal(result.closed, true);
    assert.ok(await eventually(() => uploads.aborted.length > 0), 'upload not aborted upstream');
    assert.deepEqual(uploads.complete, []);
    assert.deepEqual(uploads.aborted, ['/app/upload']);
    // The exchange ends without taking its request off the target's in-flight count.
    assert.equal(await settledActive(expectingTarget), 0, 'upstream request still counted');
  });

  it('bad chunk behind slow response', async () => {
    const upload = chunkedPost('/app/upload', 'Expect: 100-continue\r\n');
    const result = await pipeline(
      expecting.port,
      [get('/app/slow?ms=300') + upload, INVALID_CHUNK],
      { pauseMs: 100, waitMs: CLOSE_BOUND_MS },
    );

    // The documented exception: the connection closes at once, without the earlier response.
    assert.equal(result.closed, true);
    assert.deepEqual(uploads.complete, []);
    assert.equal(await settledActive(expectingTarget), 0, 'upstream requests still counted');
  });
});
