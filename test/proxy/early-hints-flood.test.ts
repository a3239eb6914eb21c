import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRawClient, RawServer, startProxy, waitForText, type ProxyFixture } from './harness.js';

/** One 103 response with an 8 KiB Link field. */
const EARLY_HINTS = `HTTP/1.1 103 Early Hints\r\nLink: </${'l'.repeat(8 * 1024)}>; rel=preload\r\n\r\n`;

/** Raw upstream that sends a 103 every millisecond for ever, and no final response. */
class HintsUpstream extends RawServer {
  protected accept(socket: Socket): void {
    socket.once('data', async () => {
      while (!socket.destroyed) {
        if (!socket.write(EARLY_HINTS)) await sleep(1);
        await sleep(1);
      }
    });
  }
}

describe('early hints without end', () => {
  const upstream = new HintsUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publishOne('app', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('forwards a few early hints', async () => {
    const client = openRawClient(proxy.port, 'GET /hints HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitForText(client.text, /103 Early Hints/);
    // The upstream sends about a thousand more while the client waits.
    await sleep(1_000);
    const hints = client.text().match(/HTTP\/1\.1 103 /g)?.length ?? 0;
    client.socket.destroy();
    await client.closed;
    assert.ok(hints >= 1, 'the client got no early hints');
    assert.ok(hints <= 8, `the client got ${hints} early hints`);
    assert.equal(proxy.latestConnection()?.writableLength ?? 0, 0);
  });
});
