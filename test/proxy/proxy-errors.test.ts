import assert from 'node:assert/strict';
import { once, type EventEmitter } from 'node:events';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  createServer as createTcpServer,
  connect,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UPSTREAM_INVALID_HTTP_CODE } from '../../data-plane/proxy/error-response.js';
import type { RoutingTable } from '../../data-plane/table.js';
import {
  closedPort,
  json,
  RawServer,
  send,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type LogLine,
  type ProxyFixture,
  type ReceivedResponse,
  type RunningServer,
} from './harness.js';

const LEVEL_WARN = 40;
const LEVEL_ERROR = 50;

/** Resolves on 'close'; unlike `once`, an 'error' event before it does not reject. */
function closed(emitter: EventEmitter): Promise<void> {
  return new Promise((resolve) => emitter.once('close', () => resolve()));
}

function assertJsonError(
  response: ReceivedResponse,
  status: number,
  error: string,
  route?: string,
): void {
  assert.equal(response.status, status);
  assert.equal(response.headers['content-type'], 'application/json');
  assert.equal(Number(response.headers['content-length']), response.body.length);
  const body = json(response);
  assert.equal(body.error, error);
  assert.equal(typeof body.message, 'string');
  assert.equal(body.route, route);
}

/** Outcome of reading a response until its connection closes. */
interface ReadOutcome {
  bytes: number;
  complete: boolean;
  error: string | undefined;
}

async function readUntilClose(res: IncomingMessage): Promise<ReadOutcome> {
  let bytes = 0;
  let error: string | undefined;
  res.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  res.on('error', (err: NodeJS.ErrnoException) => {
    error = err.code ?? err.message;
  });
  await within(closed(res), 'the client response to close');
  return { bytes, complete: res.complete, error };
}

function startRequest(port: number, path: string): Promise<IncomingMessage> {
  const req = httpRequest({ host: '127.0.0.1', port, path, agent: false });
  req.on('error', () => {
    // The tests that cut connections read the outcome from the response.
  });
  req.end();
  return within(
    once(req, 'response').then(([res]) => res as IncomingMessage),
    `response to ${path}`,
  );
}

describe('proxy error responses', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  /** Per-path behaviour of the upstream; unknown paths get 200 "ok". */
  const behaviours = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
  let publishMain: () => RoutingTable;
  let mainTable: RoutingTable;
  /** A TCP forwarder to the proxy, as a load balancer in front of the proxies would be. */
  let hairpin: Server;
  let hairpinConnections = 0;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      const behaviour = behaviours.get(req.url ?? '');
      if (behaviour !== undefined) {
        behaviour(req, res);
        return;
      }
      res.end('ok');
    });
    proxy = await startProxy();
    hairpin = createTcpServer((socket) => {
      hairpinConnections++;
      const forward = connect(proxy.port, '127.0.0.1');
      socket.pipe(forward).pipe(socket);
      socket.on('error', () => forward.destroy());
      forward.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => hairpin.listen(0, '127.0.0.1', resolve));
    const hairpinPort = (hairpin.address() as AddressInfo).port;
    const refusedPort = await closedPort();
    publishMain = () =>
      proxy.publish(
        [
          { name: 'app', path: '/app/*', upstream: 'app' },
          { name: 'read-only', path: '/read-only', methods: ['GET', 'HEAD'], upstream: 'app' },
          { name: 'orphan', path: '/orphan', upstream: 'missing' },
          { name: 'drained', path: '/drained', upstream: 'all-zero' },
          { name: 'refused', path: '/refused', upstream: 'refused' },
          { name: 'loop', path: '/loop/*', upstream: 'loop' },
          { name: 'hairpin', path: '/hairpin/*', upstream: 'hairpin' },
          {
            name: 'hairpin-via-removed',
            path: '/hairpin-via-removed/*',
            upstream: 'hairpin',
            requestHeaders: { set: [], remove: ['via'] },
          },
          {
            name: 'hairpin-via-set',
            path: '/hairpin-via-set/*',
            upstream: 'hairpin',
            requestHeaders: { set: [{ name: 'Via', value: '1.1 gateway' }], remove: [] },
          },
        ],
        [
          upstreamAt('app', upstream.port),
          upstreamAt('all-zero', upstream.port, '', 0),
          upstreamAt('refused', refusedPort),
          upstreamAt('loop', proxy.port),
          upstreamAt('hairpin', hairpinPort),
        ],
      );
    mainTable = publishMain();
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
    hairpin.close();
  });

  it('returns 503 before the first table', async () => {
    proxy.setTable(undefined);
    try {
      const response = await send(proxy.port, '/app/x');

      assertJsonError(response, 503, 'no_configuration');
    } finally {
      proxy.setTable(mainTable);
    }
  });

  it('returns 404 when no route matches', async () => {
    const response = await send(proxy.port, '/nowhere');

    assertJsonError(response, 404, 'route_not_found');
  });

  it('returns 405 with Allow', async () => {
    const response = await send(proxy.port, '/read-only', { method: 'DELETE' });

    assertJsonError(response, 405, 'method_not_allowed');
    assert.equal(response.headers.allow, 'GET, HEAD');
  });

  it('returns 400 for a router bad-request', async () => {
    const response = await send(proxy.port, '/bad-request');

    assertJsonError(response, 400, 'bad_request');
    assert.equal(json(response).message, 'stub router rejected the path');
  });

  it('returns 400 for an ftp target', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET ftp://app.test/app/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 400 /);
    assert.match(response, /"error":"bad_request"/);
  });

  it('returns 502 when the upstream is missing', async () => {
    const response = await send(proxy.port, '/orphan');

    assertJsonError(response, 502, 'upstream_unavailable', 'orphan');
  });

  it('returns 502 when every weight is 0', async () => {
    const response = await send(proxy.port, '/drained');

    assertJsonError(response, 502, 'upstream_unavailable', 'drained');
  });

  it('returns 502 when the connection is refused', async () => {
    const response = await send(proxy.port, '/refused');

    assertJsonError(response, 502, 'upstream_unreachable', 'refused');
    const warning = proxy.logs.find((line) => line.route === 'refused');
    assert.equal(warning?.level, LEVEL_WARN);
    assert.equal(warning?.msg, 'upstream request failed');
    assert.equal(warning?.code, 'ECONNREFUSED');
    assert.match(String(warning?.error), /ECONNREFUSED/);
    assert.equal(warning?.err, undefined, 'a stack trace for a refused connection');
  });

  it('returns 508 when a target is the proxy', async () => {
    const response = await send(proxy.port, '/loop/x');

    assertJsonError(response, 508, 'loop_detected', 'loop');
    assert.match(String(json(response).message), /points at the proxy itself/);
    const warning = proxy.logs.find((line) => line.code === 'LOOM_REQUEST_LOOP');
    assert.equal(warning?.level, LEVEL_WARN);
    assert.equal(warning?.msg, 'upstream request failed');
    assert.equal(warning?.route, 'loop');
    assert.equal(warning?.target, `http://127.0.0.1:${proxy.port}`);
    assert.match(String(warning?.error), /is this proxy's own listener/);
    // The connection that reached the proxy is closed before a request is sent on it.
    let open = -1;
    for (let i = 0; i < 100 && open !== 0; i++) {
      open = await proxy.connectionCount();
      if (open !== 0) await sleep(20);
    }
    assert.equal(open, 0);
  });

  it('returns 508 to a loop through another host', async () => {
    const response = await send(proxy.port, '/hairpin/x');

    assertJsonError(response, 508, 'loop_detected', 'hairpin');
    assert.match(String(json(response).message), /passed through Loom proxies 8 times/);
    // The client's request and 8 forwarded ones reached the proxy, the last with 8 Via entries.
    assert.equal(hairpinConnections, 8);
    const warning = proxy.logs.find((line) => line.msg === 'request loop detected');
    assert.equal(warning?.level, LEVEL_WARN);
    assert.equal(warning?.code, 'LOOM_REQUEST_LOOP');
    assert.equal(warning?.route, 'hairpin');
    assert.equal(warning?.loomVias, 8);
  });

  it('returns 508 past route Via actions', async () => {
    for (const route of ['hairpin-via-removed', 'hairpin-via-set']) {
      const response = await send(proxy.port, `/${route}/x`, { headers: { via: '1.1 edge' } });
      const warning = proxy.logs.find(
        (line) => line.msg === 'request loop detected' && line.route === route,
      );

      assertJsonError(response, 508, 'loop_detected', route);
      assert.match(String(json(response).message), /passed through Loom proxies 8 times/, route);
      assert.equal(warning?.code, 'LOOM_REQUEST_LOOP', route);
      assert.equal(warning?.loomVias, 8, route);
    }
  });

  it('forwards a request that passed Loom 7 times', async () => {
    const via = Array.from({ length: 7 }, () => '1.1 loom').join(', ');
    const response = await send(proxy.port, '/app/via', { headers: { via } });

    assert.equal(response.status, 200);
  });

  it('logs upstream failures after spoofed loops', async () => {
    const via = Array.from({ length: 8 }, () => '1.1 loom').join(', ');
    // More requests than the 10 warn lines a second that each budget allows.
    for (let i = 0; i < 20; i++) {
      const response = await send(proxy.port, '/app/spoofed', { headers: { via } });
      assert.equal(response.status, 508);
    }
    const before = proxy.logs.length;
    const response = await send(proxy.port, '/refused');
    const failure = proxy.logs
      .slice(before)
      .find((line) => line.msg === 'upstream request failed' && line.route === 'refused');

    assert.equal(response.status, 502);
    assert.equal(failure?.level, LEVEL_WARN);
  });

  it('returns 508 to a looping upload that expects 100', async () => {
    const response = await send(proxy.port, '/loop/upload', {
      method: 'POST',
      headers: { expect: '100-continue', 'content-length': '5' },
      body: 'hello',
    });

    assertJsonError(response, 508, 'loop_detected', 'loop');
  });

  it('returns 508 to a looping upgrade', async () => {
    const head = 'Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
    const text = await sendRaw(proxy.port, `GET /loop/ws HTTP/1.1\r\n${head}`);

    assert.match(text, /^HTTP\/1\.1 508 /);
    assert.match(text, /"error":"loop_detected"/);
  });

  it('returns 502 when the upstream resets before responding', async () => {
    behaviours.set('/app/reset', (req) => req.socket.destroy());

    const response = await send(proxy.port, '/app/reset');

    assertJsonError(response, 502, 'upstream_unreachable', 'app');
  });

  it('returns 504 when response headers time out', async () => {
    const timed = await startProxy({ headersTimeout: 200 });
    const silent = await startHttpServer(() => {
      // Never responds.
    });
    try {
      timed.publish(
        [{ name: 'silent', path: '/silent', upstream: 'silent' }],
        [upstreamAt('silent', silent.port)],
      );
      const started = Date.now();

      const response = await send(timed.port, '/silent');

      assertJsonError(response, 504, 'upstream_timeout', 'silent');
      assert.ok(Date.now() - started < 2_000, 'the timeout took longer than 2 s');
      assert.equal(
        timed.logs.find((line) => line.route === 'silent')?.code,
        'UND_ERR_HEADERS_TIMEOUT',
      );
    } finally {
      await timed.close();
      await silent.close();
    }
  });

  it('truncates a chunked response when the upstream dies mid-body', async () => {
    behaviours.set('/app/crash-chunked', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part ');
      setTimeout(() => res.socket?.destroy(), 50);
    });

    const res = await startRequest(proxy.port, '/app/crash-chunked');
    const outcome = await readUntilClose(res);

    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    assert.equal(outcome.bytes, 'first part '.length);
    assert.equal(outcome.complete, false);
    assert.equal(outcome.error, 'ECONNRESET');
    const warning = proxy.logs.find(
      (line) => line.msg === 'upstream response aborted after headers were sent',
    );
    assert.equal(warning?.route, 'app');
  });

  it('truncates a sized response when the upstream dies mid-body', async () => {
    behaviours.set('/app/crash-sized', (_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write(Buffer.alloc(100, 0x62));
      setTimeout(() => res.socket?.destroy(), 50);
    });

    const res = await startRequest(proxy.port, '/app/crash-sized');
    const outcome = await readUntilClose(res);

    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], '1000');
    assert.equal(outcome.bytes, 100);
    assert.equal(outcome.complete, false);
  });

  it('aborts the upstream request when the client leaves mid-response', async () => {
    const mark = proxy.logs.length;
    let upstreamClosed: Promise<boolean> | undefined;
    behaviours.set('/app/client-leaves', (_req, res) => {
      upstreamClosed = once(res, 'close').then(() => res.writableFinished);
      res.writeHead(200);
      res.write('partial');
    });

    const res = await startRequest(proxy.port, '/app/client-leaves');
    await within(once(res, 'data'), 'the first body chunk');
    res.destroy();

    assert.ok(upstreamClosed !== undefined);
    assert.equal(await within(upstreamClosed, 'the upstream request to close'), false);
    await assertOnlyClientCloseLogged(proxy, mark);
  });

  it('aborts the upstream request when the client leaves before the response', async () => {
    const mark = proxy.logs.length;
    let received!: () => void;
    const upstreamReceived = new Promise<void>((resolve) => (received = resolve));
    let upstreamClosed: Promise<unknown> | undefined;
    behaviours.set('/app/client-leaves-early', (_req, res) => {
      upstreamClosed = once(res, 'close');
      received();
    });

    const req = httpRequest({
      host: '127.0.0.1',
      port: proxy.port,
      path: '/app/client-leaves-early',
      agent: false,
    });
    req.on('error', () => {
      // Destroyed on purpose.
    });
    req.end();
    await within(upstreamReceived, 'the upstream to receive the request');
    req.destroy();

    assert.ok(upstreamClosed !== undefined);
    await within(upstreamClosed, 'the upstream request to close');
    await assertOnlyClientCloseLogged(proxy, mark);
  });

  it('aborts the upstream request when the client leaves mid-upload', async () => {
    const mark = proxy.logs.length;
    let upstreamAborted: Promise<boolean> | undefined;
    let firstBytes!: () => void;
    const upstreamGotBytes = new Promise<void>((resolve) => (firstBytes = resolve));
    behaviours.set('/app/upload-cut', (req) => {
      upstreamAborted = closed(req).then(() => req.complete);
      req.once('data', () => firstBytes());
      req.resume();
    });

    const req = httpRequest({
      host: '127.0.0.1',
      port: proxy.port,
      path: '/app/upload-cut',
      method: 'POST',
      headers: { 'content-length': String(10 * 1024 * 1024) },
      agent: false,
    });
    req.on('error', () => {
      // Destroyed on purpose.
    });
    req.write(Buffer.alloc(256 * 1024));
    await within(upstreamGotBytes, 'the upstream to receive the first bytes');
    req.destroy();

    assert.ok(upstreamAborted !== undefined);
    assert.equal(await within(upstreamAborted, 'the upstream request to close'), false);
    await assertOnlyClientCloseLogged(proxy, mark);
  });

  it('finishes a request on the table it started with', async () => {
    let received!: () => void;
    const upstreamReceived = new Promise<void>((resolve) => (received = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const slow = await startHttpServer((_req, res) => {
      received();
      void released.then(() => res.end('from the old table'));
    });
    const table = proxy.publish(
      [{ name: 'slow', path: '/slow', upstream: 'slow' }],
      [upstreamAt('slow', slow.port)],
    );
    try {
      const pending = send(proxy.port, '/slow');
      await within(upstreamReceived, 'the slow upstream to receive the request');
      const match = table.router.find('GET', undefined, '/slow');
      const pool = match.kind === 'found' ? match.value.balancer?.pick()?.pool : undefined;

      // The new table drops the route and its only target, so the target's pool is closed.
      proxy.publish([], []);
      const afterSwap = await send(proxy.port, '/slow');
      release();
      const response = await pending;

      assert.equal(pool?.closed, true);
      assertJsonError(afterSwap, 404, 'route_not_found');
      assert.equal(response.status, 200);
      assert.equal(response.body.toString(), 'from the old table');
    } finally {
      release();
      await slow.close();
      mainTable = publishMain();
    }
  });

  it('returns 500 when routing throws', async () => {
    proxy.setTable({
      epoch: 'test',
      version: 99,
      hash: 'broken',
      router: {
        size: 1,
        find() {
          throw new Error('router bug');
        },
        listMethods() {
          throw new Error('router bug');
        },
      },
    });

    try {
      const response = await send(proxy.port, '/app/x');

      assertJsonError(response, 500, 'internal_error');
    } finally {
      proxy.setTable(mainTable);
    }
    const line = proxy.logs.find((entry) => entry.msg === 'proxy request failed unexpectedly');
    assert.equal(line?.level, LEVEL_ERROR);
    assert.match(JSON.stringify(line?.err), /router bug/);
  });
});

/** Raw upstream that responds to every request head with a status line that is not HTTP. */
class MalformedStatusUpstream extends RawServer {
  protected accept(socket: Socket): void {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      head = '';
      socket.end('HTPP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  }
}

describe('malformed upstream responses', () => {
  const upstream = new MalformedStatusUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publishOne('malformed', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('answers 502 to a malformed status line', async () => {
    const before = proxy.logs.length;
    const response = await send(proxy.port, '/status-line');
    const line = proxy.logs.slice(before).find((entry) => entry.msg === 'upstream request failed');

    assertJsonError(response, 502, 'upstream_error', 'malformed');
    assert.match(String(json(response).message), /not valid HTTP\/1\.1/);
    assert.equal(line?.level, LEVEL_WARN);
    assert.equal(line?.code, UPSTREAM_INVALID_HTTP_CODE);
    assert.equal(line?.status, 502);
    assert.match(String(line?.error), /HTTP\/1\.1 protocol/);
    assert.equal(line?.err, undefined, 'a stack trace for a parser failure');
    assert.doesNotMatch(JSON.stringify(line), /\n\s+at /);
  });

  it('answers 502 on the 100-continue path', async () => {
    const before = proxy.logs.length;
    const response = await send(proxy.port, '/status-line-upload', {
      method: 'POST',
      headers: { expect: '100-continue', 'content-length': '5' },
      body: 'hello',
    });
    const line = proxy.logs.slice(before).find((entry) => entry.msg === 'upstream request failed');

    assertJsonError(response, 502, 'upstream_error', 'malformed');
    assert.equal(line?.code, UPSTREAM_INVALID_HTTP_CODE);
    assert.equal(line?.parserCode, 'HPE_INVALID_CONSTANT');
    assert.equal(line?.err, undefined, 'a stack trace for a parser failure');
  });
});

/**
 * Waits for the debug line about the client closing, then checks that no line logged since
 * `mark` is a warning or an error.
 */
async function assertOnlyClientCloseLogged(proxy: ProxyFixture, mark: number): Promise<void> {
  const isCloseLine = (line: LogLine) =>
    line.msg === 'client closed the connection before the response completed';
  for (let i = 0; i < 100 && !proxy.logs.slice(mark).some(isCloseLine); i++) {
    await sleep(20);
  }

  const lines = proxy.logs.slice(mark);
  assert.ok(lines.some(isCloseLine), 'no debug line about the client closing');
  assert.deepEqual(
    lines.filter((line) => line.level >= LEVEL_WARN),
    [],
  );
}
