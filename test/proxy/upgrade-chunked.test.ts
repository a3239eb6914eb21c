import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  openRawClient,
  RawServer,
  startProxy,
  waitForText,
  within,
  type ProxyFixture,
} from './harness.js';

const HEAD =
  'POST /ws HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: echo-protocol\r\n' +
  'Transfer-Encoding: chunked\r\n\r\n';

/**
 * Raw upstream that reads a request head and a chunked body up to its last chunk, keeps both as
 * received, then responds 101 and echoes every later byte in upper case.
 */
class ChunkedUpgradeUpstream extends RawServer {
  /** Bytes of the latest request up to the end of its body. */
  received = '';

  protected accept(socket: Socket): void {
    let text = '';
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n0\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      this.received = text.slice(0, end + 7);
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo-protocol\r\nConnection: Upgrade\r\n\r\n',
      );
      socket.write(text.slice(end + 7).toUpperCase());
      socket.on('data', (later: Buffer) => socket.write(later.toString('latin1').toUpperCase()));
    };
    socket.on('data', onData);
  }
}

/** Decodes a chunked body that the proxy sent, which has no extensions or trailers. */
function decodeChunks(body: string): string {
  let rest = body;
  let decoded = '';
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, lineEnd), 16);
    if (size === 0) return decoded;
    decoded += rest.slice(lineEnd + 2, lineEnd + 2 + size);
    rest = rest.slice(lineEnd + 2 + size + 2);
  }
}

/**
 * Starts `upstream` and a proxy with a 64-byte body limit whose only route leads to it, before
 * the tests of the suite. Returns a function that reads the proxy's port once it runs.
 */
function proxyTo(upstream: RawServer): () => number {
  let proxy: ProxyFixture;
  before(async () => {
    await upstream.start();
    proxy = await startProxy({}, { maxRequestBodyBytes: 64 });
    proxy.publishOne('ws', upstream.port);
  });
  after(async () => {
    await proxy.close();
    await upstream.close();
  });
  return () => proxy.port;
}

describe('chunked upgrade bodies', () => {
  const upstream = new ChunkedUpgradeUpstream();
  const proxyPort = proxyTo(upstream);

  it('sends a chunked body before the switch', async () => {
    const body = '4;name=value\r\nbody\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nafter';
    const client = openRawClient(proxyPort(), HEAD);
    // Byte by byte, so that every line and chunk is split across reads.
    for (const byte of body) {
      client.socket.write(byte);
      await sleep(1);
    }
    await waitForText(client.text, /AFTER$/);
    const received = upstream.received;
    const head = received.slice(0, received.indexOf('\r\n\r\n'));

    assert.match(client.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(head, /\r\ntransfer-encoding: chunked(\r\n|$)/i);
    assert.match(head, /\r\nupgrade: echo-protocol(\r\n|$)/i);
    assert.equal(decodeChunks(received.slice(head.length + 4)), 'bodyabc');
    assert.doesNotMatch(received, /name=value|X-Trailer/);
    client.socket.destroy();
  });

  it('sends the body and tunnel bytes of one write', async () => {
    const client = openRawClient(proxyPort(), `${HEAD}2\r\nhi\r\n0\r\n\r\nearly`);
    await waitForText(client.text, /EARLY$/);
    const received = upstream.received;

    assert.equal(decodeChunks(received.slice(received.indexOf('\r\n\r\n') + 4)), 'hi');
    client.socket.destroy();
  });

  for (const [name, body, status] of [
    ['a bare LF', '4\nbody\r\n0\r\n\r\n', 400],
    ['a size that is not hex', 'x4\r\nbody\r\n0\r\n\r\n', 400],
    ['a space before the size', ' 4\r\nbody\r\n0\r\n\r\n', 400],
    ['data longer than its size', '2\r\nbody\r\n0\r\n\r\n', 400],
    ['an invalid trailer line', '4\r\nbody\r\n0\r\nNo Colon\r\n\r\n', 400],
    ['a body over the limit', '41\r\n', 413],
    ['a huge chunk size', 'fffffffffffffffff\r\n', 400],
    ['chunk extensions over 16 KiB', `4;${'e'.repeat(17 * 1024)}\r\n`, 413],
    ['trailers over 16 KiB', `0\r\nX-Big: ${'b'.repeat(17 * 1024)}\r\n\r\n`, 431],
  ] as const) {
    it(`rejects ${name}`, async () => {
      const client = openRawClient(proxyPort(), HEAD + body);
      await within(client.closed, 'the proxy to close the connection');

      assert.match(client.text(), new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.match(client.text(), /\r\nconnection: close\r\n/i);
      assert.doesNotMatch(client.text(), /101 Switching/);
    });
  }
});

/**
 * Raw upstream that responds 101 as soon as it has the request head, before the body, and keeps
 * every byte it receives. A request for `/close` gets its connection closed after the 101.
 */
class EarlySwitchUpstream extends RawServer {
  received = '';

  protected accept(socket: Socket): void {
    let switched = false;
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.toString('latin1');
      if (switched || !this.received.includes('\r\n\r\n')) return;
      switched = true;
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo-protocol\r\nConnection: Upgrade\r\n\r\n',
      );
      if (this.received.startsWith('POST /close ')) socket.end();
    });
  }
}

describe('chunked upgrade bodies after an early 101', () => {
  const upstream = new EarlySwitchUpstream();
  const proxyPort = proxyTo(upstream);

  /** Sends the head and the first bytes of the body, and waits until the upstream has them. */
  async function openWithBodyStart(path: string, start: string) {
    upstream.received = '';
    const client = openRawClient(proxyPort(), HEAD.replace('/ws', path) + start);
    await waitForText(() => upstream.received, /\r\n\r\n/);
    await sleep(50);
    return client;
  }

  it('keeps chunked framing for the rest of the body', async () => {
    const client = await openWithBodyStart('/ws', '6;ext="a"\r\nabc');
    client.socket.write('def\r\n0\r\nX-Trailer: 1\r\n\r\ntunnel');
    await waitForText(() => upstream.received, /tunnel$/);
    const received = upstream.received;
    const body = received.slice(received.indexOf('\r\n\r\n') + 4, -'tunnel'.length);

    assert.equal(decodeChunks(body), 'abcdef');
    assert.match(body, /\r\n0\r\n\r\n$/);
    assert.doesNotMatch(received, /ext=|X-Trailer/);
    assert.match(client.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    client.socket.destroy();
  });

  for (const [name, rest, status] of [
    ['invalid framing', 'def\r\nzz\r\n', 400],
    ['a body over the limit', 'def\r\n41\r\n', 413],
  ] as const) {
    it(`rejects ${name} that follows the 101`, async () => {
      const client = await openWithBodyStart('/ws', '6\r\nabc');
      client.socket.write(rest);
      await within(client.closed, 'the proxy to close the connection');

      const received = upstream.received;

      assert.match(client.text(), new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.doesNotMatch(client.text(), /101 Switching/);
      assert.equal(received.slice(received.indexOf('\r\n\r\n') + 4), '3\r\nabc\r\n3\r\ndef\r\n');
    });
  }

  it('answers 502 when the upstream closes before the body ends', async () => {
    const client = await openWithBodyStart('/close', '6\r\nabc');
    await within(client.closed, 'the proxy to close the connection');

    assert.match(client.text(), /^HTTP\/1\.1 502 /);
    assert.doesNotMatch(client.text(), /101 Switching/);
  });
});
