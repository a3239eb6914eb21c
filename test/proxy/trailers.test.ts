import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  openRawClient,
  RawServer,
  startProxy,
  upstreamAt,
  waitForText,
  within,
  type ProxyFixture,
  type RawClient,
} from './harness.js';
import { TRAILERS_DROPPED_CODE } from '../../data-plane/proxy/observed-exchange.js';
import { UNREQUESTED_CONTINUE_CODE } from '../../data-plane/upstreams/target-state.js';

/** Raw upstream responses by path; the `/mid/*` ones stop after ten body bytes. */
const RESPONSES: Record<string, string> = {
  '/mid/chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n',
  '/mid/length': 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789',
  '/mid/close': 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789',
  '/trailers':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-hop\r\nTrailer: X-Checksum\r\n\r\n' +
    '5\r\nhello\r\n0\r\n' +
    'X-Checksum: abc\r\nGrpc-Status: 0\r\nConnection: x-t\r\nX-T: 1\r\nX-Hop: 1\r\nHost: evil\r\n' +
    'Set-Cookie: a=b\r\nContent-Type: text/evil\r\nWWW-Authenticate: Basic\r\n' +
    'Cache-Control: no-store\r\nX-Removed: r\r\n\r\n',
  // A 204 ends at its head whatever its Content-Length (RFC 9112 section 6.3), and the five
  // bytes after it are garbage on the upstream connection.
  '/no-content/length':
    'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kind: empty\r\n\r\nhello',
  '/no-content/zero': 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n',
  // llhttp rejects Content-Length in the trailer section of a chunked message.
  '/trailer-length':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n' +
    'X-Checksum: abc\r\nContent-Length: 3\r\n\r\n',
  '/ok': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  '/bad-reason': 'HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok',
};

/** Raw upstream that responds to each request from `RESPONSES` and keeps the connection open. */
class RawUpstream extends RawServer {
  /** The connection of each path's latest request. */
  readonly byPath = new Map<string, Socket>();

  protected accept(socket: Socket): void {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      const path = head.split(' ')[1];
      head = head.slice(end + 4);
      this.byPath.set(path, socket);
      socket.write(RESPONSES[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    });
  }
}

/** Splits a raw chunked response into its head, decoded body and trailer section. */
function parseChunked(text: string): { head: string; body: string; trailers: string[] } {
  const headEnd = text.indexOf('\r\n\r\n');
  let rest = text.slice(headEnd + 4);
  let body = '';
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, lineEnd), 16);
    rest = rest.slice(lineEnd + 2);
    if (size === 0) break;
    body += rest.slice(0, size);
    rest = rest.slice(size + 2);
  }
  const trailers = rest.slice(0, rest.indexOf('\r\n\r\n')).split('\r\n').filter(Boolean);
  return { head: text.slice(0, headEnd), body, trailers };
}

describe('response endings', () => {
  const upstream = new RawUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publish(
      [
        {
          name: 'raw',
          path: '/*',
          upstream: 'raw',
          responseHeaders: { set: [], remove: ['x-removed'] },
        },
      ],
      [upstreamAt('raw', upstream.port)],
    );
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  /** Sends `path`, waits for the ten body bytes, then resets the upstream connection. */
  async function cutMidBody(path: string, version: '1.0' | '1.1'): Promise<RawClient> {
    const host = version === '1.1' ? 'Host: t\r\nConnection: close\r\n' : '';
    const client = openRawClient(proxy.port, `GET ${path} HTTP/${version}\r\n${host}\r\n`);
    await waitForText(client.text, /0123456789(\r\n)?$/);
    upstream.byPath.get(path)?.resetAndDestroy();
    await within(client.closed, 'the proxy to close the client connection');
    return client;
  }

  it('resets an HTTP/1.0 client on a cut body', async () => {
    const client = await cutMidBody('/mid/chunked', '1.0');

    assert.match(client.text(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(client.text(), /content-length|transfer-encoding/i);
    assert.equal(client.error()?.code, 'ECONNRESET');
  });

  it('resets an HTTP/1.0 client on a cut close-delimited body', async () => {
    const client = await cutMidBody('/mid/close', '1.0');

    assert.equal(client.error()?.code, 'ECONNRESET');
  });

  it('keeps Content-Length on a cut HTTP/1.0 body', async () => {
    const client = await cutMidBody('/mid/length', '1.0');
    const text = client.text();

    assert.match(text, /\r\ncontent-length: 100\r\n/i);
    assert.equal(text.slice(text.indexOf('\r\n\r\n') + 4), '0123456789');
  });

  it('leaves a cut chunked body unterminated', async () => {
    const client = await cutMidBody('/mid/chunked', '1.1');
    const text = client.text();

    assert.match(text, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.ok(text.endsWith('a\r\n0123456789\r\n'), JSON.stringify(text));
  });

  it('reframes a cut close-delimited body as chunked', async () => {
    const client = await cutMidBody('/mid/close', '1.1');
    const text = client.text();

    assert.match(text, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.ok(text.endsWith('a\r\n0123456789\r\n'), JSON.stringify(text));
  });

  it('keeps Content-Length on a cut HTTP/1.1 body', async () => {
    const client = await cutMidBody('/mid/length', '1.1');
    const text = client.text();

    assert.match(text, /\r\ncontent-length: 100\r\n/i);
    assert.equal(text.slice(text.indexOf('\r\n\r\n') + 4), '0123456789');
  });

  it('filters forwarded trailer fields', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const { head, body, trailers } = parseChunked(client.text());
    const names = trailers.map((line) => line.slice(0, line.indexOf(':')).toLowerCase());

    assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(body, 'hello');
    assert.deepEqual(names.sort(), ['grpc-status', 'x-checksum']);
  });

  it('ends a body whose trailers carry Content-Length', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /trailer-length HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const text = client.text();
    const line = proxy.logs.find((entry) => entry.code === TRAILERS_DROPPED_CODE);

    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\ntransfer-encoding: chunked\r\n/i);
    // The whole body, the last chunk, and an empty trailer section.
    assert.ok(text.endsWith('\r\n\r\n5\r\nhello\r\n0\r\n\r\n'), JSON.stringify(text));
    assert.equal(client.error(), undefined);
    assert.equal(line?.level, 40);
    assert.equal(line?.status, 200);
  });

  /**
   * Sends `request`, which gets the `/trailer-length` response through `node:http`, and checks
   * that the client got the whole body without trailers and that no line `cutMessage` was logged.
   */
  async function assertTrailersDropped(request: string, cutMessage: string): Promise<void> {
    const before = proxy.logs.length;
    const client = openRawClient(proxy.port, request);
    await within(client.closed, 'the response to end');
    const text = client.text();
    const lines = proxy.logs.slice(before);
    const dropped = lines.find((entry) => entry.code === TRAILERS_DROPPED_CODE);

    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.ok(text.endsWith('\r\n\r\n5\r\nhello\r\n0\r\n\r\n'), JSON.stringify(text));
    assert.equal(client.error(), undefined);
    assert.equal(dropped?.level, 40);
    assert.equal(dropped?.status, 200);
    assert.equal(dropped?.route, 'raw');
    assert.equal(
      lines.find((entry) => entry.msg === cutMessage),
      undefined,
    );
  }

  it('ends an upgrade relay at trailer Content-Length', async () => {
    await assertTrailersDropped(
      'GET /trailer-length HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
      'upstream response to an upgrade request cut',
    );
  });

  it('ends a 100-continue body at trailer Content-Length', async () => {
    await assertTrailersDropped(
      'POST /trailer-length HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n' +
        'Content-Length: 2\r\nConnection: close\r\n\r\n',
      'upstream response aborted after headers were sent',
    );
  });

  it('ends a 204 with Content-Length at its head', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /no-content/length HTTP/1.1\r\nHost: t\r\n\r\n' +
        'GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the responses to end');
    const [noContent, ok] = client.text().split(/(?=HTTP\/1\.1 )/);

    assert.match(noContent, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.match(noContent, /\r\nx-kind: empty\r\n/i);
    assert.doesNotMatch(noContent, /content-length/i);
    assert.ok(noContent.endsWith('\r\n\r\n'), JSON.stringify(noContent));
    assert.match(ok ?? '', /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
  });

  it('sends no Content-Length with a 204', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /no-content/zero HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');

    assert.match(client.text(), /^HTTP\/1\.1 204 No Content\r\n/);
    assert.doesNotMatch(client.text(), /content-length/i);
  });

  it('sends no Content-Length with a 204 to 100-continue', async () => {
    const client = openRawClient(
      proxy.port,
      'POST /no-content/zero HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n' +
        'Content-Length: 2\r\nConnection: close\r\n\r\n',
    );
    await waitForText(client.text, /^HTTP\/1\.1 (100|204) /);
    client.socket.write('hi');
    await within(client.closed, 'the response to end');
    const final = client.text().replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');

    assert.match(final, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.doesNotMatch(final, /content-length/i);
  });

  it('answers 502 to an invalid reason phrase', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /bad-reason HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');

    assert.match(client.text(), /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(client.text(), /"error":"upstream_error"/);
  });
});

/**
 * Raw upstream that sends an unrequested 100 Continue before a chunked response whose trailer
 * section contains Content-Length. Each response comes in one write, so the parser reads the
 * chunks and the failing trailer together, except for `/late`, whose last chunk and trailer
 * section come in a second write. `/mid/chunked` gets the response of `RESPONSES` that stops
 * after ten body bytes, and `cutSocket` is its connection.
 */
class ContinueTrailerUpstream extends RawServer {
  cutSocket: Socket | undefined;

  protected accept(socket: Socket): void {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      const path = head.split(' ')[1];
      head = head.slice(end + 4);
      if (path === '/mid/chunked') {
        this.cutSocket = socket;
        socket.write('HTTP/1.1 100 Continue\r\n\r\n' + RESPONSES[path]);
        return;
      }
      const response = 'HTTP/1.1 100 Continue\r\n\r\n' + RESPONSES['/trailer-length'];
      if (path !== '/late') {
        socket.write(response);
        return;
      }
      // The trailer section comes in a read of its own, after the client got the chunks.
      const split = response.indexOf('0\r\n');
      socket.write(response.slice(0, split));
      setTimeout(() => socket.write(response.slice(split)), 20);
    });
  }
}

describe('responses from a marked target', () => {
  const upstream = new ContinueTrailerUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publishOne('marked', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('ends the body over node:http', async () => {
    // undici fails on the 100 and marks the target. The GET is then sent again through
    // node:http, which skips the 100 and rejects the trailer section.
    const client = openRawClient(
      proxy.port,
      'GET /page HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const text = client.text();
    const marked = proxy.logs.filter((entry) => entry.code === UNREQUESTED_CONTINUE_CODE);
    const dropped = proxy.logs.filter((entry) => entry.code === TRAILERS_DROPPED_CODE);

    assert.equal(marked.length, 1);
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(text, /100 Continue/);
    assert.ok(text.endsWith('\r\n\r\n5\r\nhello\r\n0\r\n\r\n'), JSON.stringify(text));
    assert.equal(client.error(), undefined);
    assert.equal(dropped.length, 1);
    assert.equal(dropped[0]?.status, 200);
    assert.equal(dropped[0]?.route, 'marked');
  });

  // `/late` sends the trailer section in a read of its own, after the client got the chunks.
  for (const [name, path] of [
    ['ends the body of a marked target again', '/page'],
    ['ends the body when the trailers come later', '/late'],
  ]) {
    it(name, async () => {
      const before = proxy.logs.length;
      const client = openRawClient(
        proxy.port,
        `GET ${path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`,
      );
      await within(client.closed, 'the response to end');
      const text = client.text();
      const dropped = proxy.logs
        .slice(before)
        .filter((entry) => entry.code === TRAILERS_DROPPED_CODE);

      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(text.endsWith('\r\n\r\n5\r\nhello\r\n0\r\n\r\n'), JSON.stringify(text));
      assert.equal(client.error(), undefined);
      assert.equal(dropped.length, 1);
    });
  }

  it('resets an HTTP/1.0 client on a cut body', async () => {
    // The target is marked, so the GET goes through node:http, and the body reaches the
    // HTTP/1.0 client delimited by the connection close.
    const client = openRawClient(proxy.port, 'GET /mid/chunked HTTP/1.0\r\n\r\n');
    await waitForText(client.text, /0123456789$/);
    upstream.cutSocket?.resetAndDestroy();
    await within(client.closed, 'the proxy to close the client connection');

    assert.match(client.text(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(client.text(), /content-length|transfer-encoding/i);
    assert.equal(client.error()?.code, 'ECONNRESET');
  });
});
