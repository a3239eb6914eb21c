import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { openRawClient, RawServer, startProxy, within, type ProxyFixture } from './harness.js';

/** Canned upstream responses by request path. A response marked `end` is followed by a FIN. */
const RESPONSES: Record<string, { text: string; end: boolean }> = {
  '/gzip-chunked': {
    text: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nCODED\r\n0\r\n\r\n',
    end: false,
  },
  '/gzip-close': {
    text: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nCODED',
    end: true,
  },
  '/split-codings': {
    text: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nCODED\r\n0\r\n\r\n',
    end: false,
  },
  '/upgrade-refused': {
    text: 'HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nCODED\r\n0\r\n\r\n',
    end: false,
  },
  '/no-content-length': {
    text: 'HTTP/1.1 204 No Content\r\nX-Kind: empty\r\nContent-Length: 5\r\n\r\n',
    end: false,
  },
  '/unrequested-switch': {
    text: 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    end: false,
  },
  '/status-600': {
    text: 'HTTP/1.1 600 Odd\r\nContent-Length: 5\r\n\r\nCODED',
    end: false,
  },
  '/plain': { text: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain', end: false },
};

/** Raw upstream that sends the canned response for the path of every request head. */
class CannedUpstream extends RawServer {
  protected accept(socket: Socket): void {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      for (let end = head.indexOf('\r\n\r\n'); end !== -1; end = head.indexOf('\r\n\r\n')) {
        const path = head.split(' ')[1];
        head = head.slice(end + 4);
        const response = RESPONSES[path] ?? {
          text: 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n',
          end: false,
        };
        if (response.end) {
          socket.end(response.text);
        } else {
          socket.write(response.text);
        }
      }
    });
  }
}

/** Sends `text` on a new connection and returns everything received until the proxy closed it. */
async function exchange(port: number, text: string): Promise<string> {
  const client = openRawClient(port, text);
  await within(client.closed, 'the proxy to close the connection');
  return client.text();
}

const NEXT_REQUEST = 'GET /plain HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n';

describe('upstream response framing', () => {
  const upstream = new CannedUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publishOne('canned', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  const REJECTED = [
    { path: '/gzip-chunked', message: /the upstream request failed/ },
    { path: '/gzip-close', message: /the upstream request failed/ },
    { path: '/split-codings', message: /the upstream request failed/ },
    { path: '/status-600', message: /the upstream request failed/ },
    { path: '/unrequested-switch', message: /cannot read/ },
  ];
  for (const { path, message } of REJECTED) {
    it(`answers 502 to ${path}`, async () => {
      const text = await exchange(
        proxy.port,
        `GET ${path} HTTP/1.1\r\nHost: a.test\r\n\r\n${NEXT_REQUEST}`,
      );
      const [first, second] = text.split(/(?=HTTP\/1\.1 )/);

      assert.match(first, /^HTTP\/1\.1 502 /);
      assert.match(first, /"error":"upstream_error"/);
      assert.match(first, message);
      assert.doesNotMatch(text, /CODED/, 'the coded body reached the client');
      assert.match(second, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nplain$/);
    });
  }

  const OTHER_EXCHANGES = [
    {
      name: 'transfer coding of a 100-continue request',
      text: 'POST /gzip-chunked HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n',
    },
    {
      name: 'transfer coding of a refused upgrade',
      text: 'GET /upgrade-refused HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    },
    {
      name: 'status 600 to a 100-continue request',
      text: 'POST /status-600 HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n',
    },
    {
      name: 'status 600 to an upgrade',
      text: 'GET /status-600 HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    },
  ];
  for (const { name, text: request } of OTHER_EXCHANGES) {
    it(`rejects ${name}`, async () => {
      const text = await exchange(proxy.port, request);

      assert.match(text, /^HTTP\/1\.1 502 /);
      assert.match(text, /"error":"upstream_error"/);
      assert.doesNotMatch(text, /CODED/, 'the coded body reached the client');
    });
  }

  it('completes 204 with a Content-Length', async () => {
    const text = await exchange(
      proxy.port,
      `GET /no-content-length HTTP/1.1\r\nHost: a.test\r\n\r\n${NEXT_REQUEST}`,
    );
    const [first, second] = text.split(/(?=HTTP\/1\.1 )/);

    assert.match(first, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.match(first, /\r\nx-kind: empty\r\n/i);
    assert.doesNotMatch(first, /content-length/i);
    assert.ok(first.endsWith('\r\n\r\n'), 'the 204 response carried a body');
    assert.match(second, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nplain$/);
  });
});
