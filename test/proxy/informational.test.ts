import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  openRawClient,
  RawServer,
  startProxy,
  waitForText,
  within,
  type ProxyFixture,
} from './harness.js';

/** Three 1xx responses with a field each, then a final 200 with the body "ok". */
const INTERIM_THEN_OK =
  'HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Draft-Interop-Version: 6\r\n' +
  'Connection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n' +
  'HTTP/1.1 102 Processing\r\nX-Step: 2\r\n\r\n' +
  'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n' +
  'HTTP/1.1 199 Whatever\r\nX-Step: 3\r\n\r\n' +
  'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

/** Raw upstream that responds to each request head with `INTERIM_THEN_OK` and ignores bodies. */
class InterimUpstream extends RawServer {
  protected accept(socket: Socket): void {
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      head = '';
      socket.write(INTERIM_THEN_OK);
    });
  }
}

/** Splits raw response text into its response heads and the final body. */
function heads(text: string): string[] {
  return text
    .split(/(?=HTTP\/1\.1 \d{3} )/)
    .map((response) => response.slice(0, response.indexOf('\r\n\r\n')));
}

describe('informational responses', () => {
  const upstream = new InterimUpstream();
  let proxy: ProxyFixture;

  before(async () => {
    await upstream.start();
    proxy = await startProxy();
    proxy.publishOne('interim', upstream.port);
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('forwards 104, 102, 103 and 199 in order', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /interim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const statuses = heads(client.text()).map((head) => head.slice(9, 12));

    assert.deepEqual(statuses, ['104', '102', '103', '199', '200']);
    assert.ok(client.text().endsWith('\r\n\r\nok'), JSON.stringify(client.text()));
  });

  it('keeps end-to-end fields of a 1xx', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /interim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const [resumption, processing, , unregistered] = heads(client.text());

    assert.match(resumption, /\r\nUpload-Draft-Interop-Version: 6$/m);
    assert.match(processing, /\r\nX-Step: 2$/m);
    assert.match(unregistered, /\r\nX-Step: 3$/m);
  });

  it('drops hop-by-hop fields of a 1xx', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /interim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const [resumption] = heads(client.text());

    assert.doesNotMatch(resumption, /^connection:/im);
    assert.doesNotMatch(resumption, /^x-hop:/im);
    assert.doesNotMatch(resumption, /^keep-alive:/im);
  });

  it('sends no 1xx to an HTTP/1.0 client', async () => {
    const client = openRawClient(proxy.port, 'GET /interim HTTP/1.0\r\nHost: a\r\n\r\n');
    await within(client.closed, 'the response to end');

    assert.match(client.text(), /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(heads(client.text()).length, 1);
  });

  it('forwards 1xx to a 100-continue request', async () => {
    const client = openRawClient(
      proxy.port,
      'POST /interim HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n' +
        'Connection: close\r\n\r\n',
    );
    await waitForText(client.text, /\r\n\r\nok$/);
    const statuses = heads(client.text()).map((head) => head.slice(9, 12));

    assert.deepEqual(statuses, ['104', '102', '103', '199', '200']);
    client.socket.destroy();
  });

  it('forwards 1xx to an upgrade request', async () => {
    const client = openRawClient(
      proxy.port,
      'GET /interim HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    await within(client.closed, 'the response to end');
    const statuses = heads(client.text()).map((head) => head.slice(9, 12));

    assert.deepEqual(statuses, ['104', '102', '103', '199', '200']);
  });
});
