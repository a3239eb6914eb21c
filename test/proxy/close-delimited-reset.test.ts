import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import {
  eventually,
  openRawClient,
  RawServer,
  startProxy,
  waitForText,
  within,
  type ProxyFixture,
} from './harness.js';

/**
 * Decodes the chunked body of the one response in `text`. `terminated` is true when the last
 * chunk (size 0) arrived.
 */
function dechunk(text: string): { body: string; terminated: boolean } {
  let rest = text.slice(text.indexOf('\r\n\r\n') + 4);
  let body = '';
  for (;;) {
    const line = rest.indexOf('\r\n');
    if (line === -1) return { body, terminated: false };
    const size = parseInt(rest.slice(0, line), 16);
    if (size === 0) return { body, terminated: rest.slice(line) === '\r\n\r\n' };
    body += rest.slice(line + 2, line + 2 + size);
    rest = rest.slice(line + 2 + size + 2);
  }
}

/** Raw upstream that hands each request's connection to the test, by request path. */
class RawUpstream extends RawServer {
  readonly #waiting = new Map<string, (socket: Socket) => void>();

  /** Resolves with the connection of the next request for `path`, once its head arrived. */
  next(path: string): Promise<Socket> {
    return within(
      new Promise<Socket>((resolve) => this.#waiting.set(path, resolve)),
      `the upstream request for ${path}`,
    );
  }

  protected accept(socket: Socket): void {
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.removeListener('data', onData);
      // The rest of a request body stays unread, as in an upstream that responds early.
      socket.pause();
      const path = head.split(' ')[1];
      head = '';
      const resolve = this.#waiting.get(path);
      this.#waiting.delete(path);
      resolve?.(socket);
    };
    socket.on('data', onData);
  }
}

const CLOSE_DELIMITED_HEAD = 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n';

describe('close-delimited upstream responses', () => {
  const upstream = new RawUpstream();
  let proxy: ProxyFixture;
  let target: UpstreamTarget;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    target = proxy.publishOne('raw', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('delivers a close-delimited body ended by FIN', async () => {
    const modern = openRawClient(proxy.port, 'GET /fin11 HTTP/1.1\r\nHost: a\r\n\r\n');
    const legacy = openRawClient(proxy.port, 'GET /fin10 HTTP/1.0\r\nHost: a\r\n\r\n');
    const [a, b] = await Promise.all([upstream.next('/fin11'), upstream.next('/fin10')]);
    for (const socket of [a, b]) {
      socket.write(CLOSE_DELIMITED_HEAD + '0123456789');
      socket.end('abcdef');
    }

    await waitForText(modern.text, /\r\n0\r\n\r\n$/);
    assert.deepEqual(dechunk(modern.text()), { body: '0123456789abcdef', terminated: true });
    await within(legacy.closed, 'the HTTP/1.0 response to close');
    assert.equal(legacy.error(), undefined);
    assert.match(legacy.text(), /\r\n\r\n0123456789abcdef$/);
    modern.socket.destroy();
  });

  it('delivers framed bodies before a reset', async () => {
    const responses: Record<string, string> = {
      '/length-close': 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n',
      '/length-keep': 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n',
      '/chunked-close':
        'HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n',
      '/http10-length': 'HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n',
    };
    for (const [path, head] of Object.entries(responses)) {
      const client = openRawClient(proxy.port, `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`);
      const socket = await upstream.next(path);
      const body = head.includes('chunked') ? 'a\r\n0123456789\r\n0\r\n\r\n' : '0123456789';
      // Head and body in one write, and the reset in the same turn.
      socket.write(head + body);
      socket.resetAndDestroy();

      await waitForText(client.text, /0123456789(\r\n0\r\n\r\n)?$/);
      await sleep(50);
      assert.equal(client.error(), undefined, `${path}: client connection failed`);
      assert.equal(client.socket.destroyed, false, `${path}: client connection closed`);
      assert.match(client.text(), /^HTTP\/1\.1 200 /, path);
      client.socket.destroy();
    }
  });

  it('delivers HEAD and 304 before a reset', async () => {
    const cases = [
      ['/head', 'HEAD', 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n'],
      ['/not-modified', 'GET', 'HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n'],
    ] as const;
    for (const [path, method, head] of cases) {
      const client = openRawClient(proxy.port, `${method} ${path} HTTP/1.1\r\nHost: a\r\n\r\n`);
      const socket = await upstream.next(path);
      socket.write(head);
      socket.resetAndDestroy();

      await waitForText(client.text, /\r\n\r\n$/);
      await sleep(50);
      assert.equal(client.error(), undefined, `${path}: client connection failed`);
      assert.equal(client.socket.destroyed, false, `${path}: client connection closed`);
      client.socket.destroy();
    }
  });

  // Two upstream connections finish in the same turn: one with a reset, one cleanly. Only the
  // response whose upstream reset may reach its client as cut.
  for (const [name, ending] of [
    ['close-delimited', 'fin'],
    ['length-delimited', 'length'],
  ] as const) {
    it(`keeps a ${name} body beside a reset`, async () => {
      for (let round = 0; round < 20; round++) {
        const victim = openRawClient(proxy.port, `GET /victim HTTP/1.1\r\nHost: a\r\n\r\n`);
        const cut = openRawClient(proxy.port, `GET /cut HTTP/1.1\r\nHost: a\r\n\r\n`);
        const [good, bad] = await Promise.all([upstream.next('/victim'), upstream.next('/cut')]);
        if (ending === 'fin') {
          good.write(CLOSE_DELIMITED_HEAD + '0123456789');
        } else {
          good.write('HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789');
        }
        bad.write(CLOSE_DELIMITED_HEAD + '0123456789');
        await waitForText(victim.text, /0123456789(\r\n)?$/);
        await waitForText(cut.text, /0123456789\r\n$/);

        // Both sockets are written in the same turn, and the order alternates between rounds.
        const finish = (): void => {
          if (ending === 'fin') good.end('abcdefghij');
          else good.write('abcdefghij');
        };
        if (round % 2 === 0) {
          finish();
          bad.resetAndDestroy();
        } else {
          bad.resetAndDestroy();
          finish();
        }

        await within(cut.closed, 'the cut client to close');
        await waitForText(victim.text, /abcdefghij(\r\n0\r\n\r\n)?$/);
        await sleep(20);
        assert.equal(victim.error(), undefined, `round ${round}: complete response cut`);
        assert.equal(victim.socket.destroyed, false, `round ${round}: client closed`);
        assert.doesNotMatch(cut.text(), /\r\n0\r\n\r\n$/, `round ${round}: cut body terminated`);
        victim.socket.destroy();
        if (ending === 'length') good.destroy();
      }
      assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    });
  }

  // The client streams a request body while the upstream responds early and then resets.
  // Whichever of the proxy's read and write reports the reset, the client must see a cut.
  // undici carries plain requests, and `node:http` carries 100-continue ones.
  for (const [order, expect] of [
    ['reset first', false],
    ['body first', false],
    ['reset first', true],
    ['body first', true],
  ] as const) {
    const kind = expect ? 'a 100-continue upload' : 'an upload';
    it(`cuts a body reset during ${kind}, ${order}`, async () => {
      const failures: string[] = [];
      for (let round = 0; round < 10; round++) {
        const head = 'POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n';
        const client = openRawClient(
          proxy.port,
          expect ? `${head}Expect: 100-continue\r\n\r\n` : `${head}\r\n${'x'.repeat(1000)}`,
        );
        const socket = await upstream.next('/upload');
        if (expect) {
          socket.write('HTTP/1.1 100 Continue\r\n\r\n');
          await waitForText(client.text, /100 Continue\r\n\r\n$/);
          client.socket.write('x'.repeat(1000));
        }
        socket.write(CLOSE_DELIMITED_HEAD + '0123456789');
        await waitForText(client.text, /0123456789\r\n$/);

        if (order === 'reset first') {
          socket.resetAndDestroy();
          client.socket.write('y'.repeat(1000));
        } else {
          client.socket.write('y'.repeat(1000));
          socket.resetAndDestroy();
        }
        await sleep(100);
        if (/\r\n0\r\n\r\n$/.test(client.text())) {
          failures.push(`round ${round}: the client got a terminated chunked body`);
        }
        client.socket.destroy();
        await within(client.closed, 'the client to close');
      }
      assert.deepEqual(failures, []);
      assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    });
  }

  // An upstream that closes with unread input resets the connection right after its response.
  // Each round is a race between the proxy's next upload write and its read of that response.
  it('relays a rejection sent right before a reset', async () => {
    const body = Buffer.alloc(4 * 1024 * 1024, 'x');
    const rejection =
      'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n';
    for (let round = 0; round < 5; round++) {
      const client = openRawClient(
        proxy.port,
        `PUT /reject HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      const socket = await upstream.next('/reject');
      socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      await waitForText(client.text, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
      socket.once('data', () => socket.write(rejection, () => socket.resetAndDestroy()));
      socket.resume();
      client.socket.write(body);
      await within(client.closed, 'the proxy to close the connection');

      const final = client.text().slice('HTTP/1.1 100 Continue\r\n\r\n'.length);
      assert.match(final, /^HTTP\/1\.1 413 Payload Too Large\r\n/, `round ${round}`);
      assert.match(final, /\r\n\r\ntoo big\n$/, `round ${round}`);
    }
  });

  it('leaves nothing open after a cut', async () => {
    const legacy = openRawClient(proxy.port, 'GET /gone HTTP/1.0\r\nHost: a\r\n\r\n');
    const socket = await upstream.next('/gone');
    socket.write(CLOSE_DELIMITED_HEAD + '0123456789');
    await waitForText(legacy.text, /0123456789$/);
    socket.resetAndDestroy();

    await within(legacy.closed, 'the HTTP/1.0 client to close');
    assert.equal(legacy.error()?.code, 'ECONNRESET');
    assert.ok(await eventually(() => target.state.active === 0), 'target still busy');
    assert.equal(await proxy.connectionCount(), 0);
  });
});
