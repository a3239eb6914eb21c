import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { isContinueExpectation } from '../../data-plane/proxy/headers.js';
import { clearEachAndCloseAfter } from '../helpers/hooks.js';
import {
  openRawClient,
  pipeline,
  sendRaw,
  startHttpServer,
  startProxy,
  upstreamAt,
  waitForText,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

function bodyOf(response: string): Record<string, unknown> {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

describe('Expect', () => {
  let proxy: ProxyFixture;
  let upstream: RunningServer;
  /** Request lines the upstream received. */
  const received: string[] = [];

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      received.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => res.end(`upstream ${req.method}`));
    });
    proxy = await startProxy();
    proxy.publish(
      [{ name: 'app', path: '/app/*', upstream: 'app' }],
      [upstreamAt('app', upstream.port)],
    );
  });

  clearEachAndCloseAfter(received, () => [proxy, upstream]);

  // Node.js hands `100-continue, foo` to 'checkContinue', because the value contains the token,
  // and `foo` to 'checkExpectation'; HTTP/1.0 requests reach 'request' with any Expect.
  for (const [expect, path] of [
    ['100-continue, foo', "Node.js's 100-continue path"],
    ['foo', "Node.js's other-expectation path"],
    ['100-continue;x=1', 'a parameter'],
    ['x/100-continue', 'a token around 100-continue'],
  ] as const) {
    it(`417 for ${JSON.stringify(expect)} (${path})`, async () => {
      const client = openRawClient(
        proxy.port,
        `POST /app/upload HTTP/1.1\r\nHost: a\r\nExpect: ${expect}\r\nContent-Length: 5\r\n\r\n`,
      );
      await within(client.closed, 'the proxy to close the connection');

      const text = client.text();
      assert.match(text, /^HTTP\/1\.1 417 Expectation Failed\r\n/);
      assert.doesNotMatch(text, /100 Continue/);
      assert.match(text, /\r\nconnection: close\r\n/i);
      assert.equal(bodyOf(text).error, 'expectation_failed');
      assert.deepEqual(received, []);
    });
  }

  it('417 without a body keeps the connection', async () => {
    const result = await pipeline(proxy.port, [
      'GET /app/a HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n' +
        'GET /app/b HTTP/1.1\r\nHost: a\r\nExpect: bar\r\nContent-Length: 0\r\n\r\n' +
        'GET /app/c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    ]);

    assert.deepEqual(result.statuses, [417, 417, 200]);
    assert.doesNotMatch(result.text.slice(0, result.text.lastIndexOf('HTTP/1.1 200')), /close/i);
    assert.deepEqual(received, ['GET /app/c']);
  });

  it('417 on the 100-continue path closes', async () => {
    // Node.js 20 closes the connection after a response to a request it took for 100-continue
    // that was not preceded by a 100, whatever the body.
    const result = await pipeline(proxy.port, [
      'GET /app/a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\nContent-Length: 0\r\n\r\n' +
        'GET /app/b HTTP/1.1\r\nHost: a\r\n\r\n',
    ]);

    assert.deepEqual(result.statuses, [417]);
    assert.match(result.text, /\r\nconnection: close\r\n/i);
    assert.deepEqual(received, []);
  });

  it('417 for an empty value', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /app/a HTTP/1.1\r\nHost: a\r\nExpect:\r\nConnection: close\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 417 /);
    assert.deepEqual(received, []);
  });

  it('417 for HTTP/1.0 with another expectation', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /app/old HTTP/1.0\r\nHost: a\r\nExpect: foo\r\nContent-Length: 2\r\n\r\nhi',
    );

    assert.match(response, /^HTTP\/1\.1 417 /);
    assert.deepEqual(received, []);
  });

  it('HTTP/1.0 ignores 100-continue', async () => {
    const response = await sendRaw(
      proxy.port,
      'POST /app/old HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi',
    );

    assert.match(response, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(response, /100 Continue/);
    assert.deepEqual(received, ['POST /app/old']);
  });

  it('accepts case and whitespace variants', async () => {
    const client = openRawClient(
      proxy.port,
      'POST /app/up HTTP/1.1\r\nHost: a\r\nExpect: \t100-Continue \r\nContent-Length: 2\r\nConnection: close\r\n\r\n',
    );
    await waitForText(client.text, /^HTTP\/1\.1 100 Continue\r\n\r\n/);
    client.socket.write('hi');
    await within(client.closed, 'the proxy to close the connection');

    assert.match(client.text(), /HTTP\/1\.1 200 OK\r\n/);
    assert.deepEqual(received, ['POST /app/up']);
  });

  it('417 on an upgrade request', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET /app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: foo\r\n\r\n',
    );

    assert.match(response, /^HTTP\/1\.1 417 /);
    assert.deepEqual(received, []);
  });
});

describe('isContinueExpectation', () => {
  for (const value of [
    '100-continue',
    '100-CONTINUE',
    ' 100-continue\t',
    '100-continue, ',
    ', 100-continue',
  ]) {
    it(`accepts ${JSON.stringify(value)}`, () => {
      assert.equal(isContinueExpectation(value), true);
    });
  }
  for (const value of [
    '',
    ' , ',
    'foo',
    '100-continue, foo',
    '100-continuex',
    '100-continue;a=b',
    '\u00a0100-continue',
  ]) {
    it(`rejects ${JSON.stringify(value)}`, () => {
      assert.equal(isContinueExpectation(value), false);
    });
  }
});
