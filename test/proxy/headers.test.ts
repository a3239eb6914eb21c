import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildClientResponseHeaders,
  buildUpstreamRequestHeaders,
} from '../../data-plane/proxy/headers.js';
import { LogLimiter } from '../../data-plane/proxy/log-limiter.js';

function pairs(flat: readonly unknown[]): Array<[unknown, unknown]> {
  const result: Array<[unknown, unknown]> = [];
  for (let i = 0; i < flat.length; i += 2) {
    result.push([flat[i], flat[i + 1]]);
  }
  return result;
}

describe('buildUpstreamRequestHeaders', () => {
  it('drops hop-by-hop and Connection-named headers', () => {
    // prettier-ignore
    const raw = [
      'Host', 'api.test',
      'Connection', 'keep-alive, X-Hop-One',
      'connection', 'x-hop-two',
      'Keep-Alive', 'timeout=5',
      'Proxy-Connection', 'keep-alive',
      'TE', 'trailers',
      'Trailer', 'x-checksum',
      'Transfer-Encoding', 'chunked',
      'Upgrade', 'h2c',
      'Proxy-Authenticate', 'Basic',
      'Proxy-Authorization', 'Basic eDp5',
      'X-Hop-One', '1',
      'X-HOP-TWO', '2',
      'Expect', '100-continue',
      'X-Kept', 'yes',
    ];

    const headers = buildUpstreamRequestHeaders(raw, '127.0.0.1', 'http');

    assert.deepEqual(pairs(headers), [
      ['Host', 'api.test'],
      ['X-Kept', 'yes'],
      ['x-forwarded-for', '127.0.0.1'],
      ['x-forwarded-proto', 'http'],
      ['x-forwarded-host', 'api.test'],
    ]);
  });

  it('keeps case, order and repeated headers', () => {
    const raw = ['Accept', 'a/b', 'X-Multi', '1', 'Cookie', 'a=1', 'X-Multi', '2'];

    const headers = buildUpstreamRequestHeaders(raw, undefined, 'https');

    // prettier-ignore
    assert.deepEqual(headers, [
      'Accept', 'a/b',
      'X-Multi', '1',
      'Cookie', 'a=1',
      'X-Multi', '2',
      'x-forwarded-proto', 'https',
    ]);
  });

  it('appends the client to X-Forwarded-For', () => {
    // prettier-ignore
    const raw = [
      'X-Forwarded-For', '203.0.113.7',
      'x-forwarded-for', '198.51.100.2, 10.0.0.1',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Host', 'spoofed.test',
      'Host', 'api.test:8080',
    ];

    const headers = buildUpstreamRequestHeaders(raw, '::1', 'http');

    assert.deepEqual(pairs(headers), [
      ['Host', 'api.test:8080'],
      ['x-forwarded-for', '203.0.113.7, 198.51.100.2, 10.0.0.1, ::1'],
      ['x-forwarded-proto', 'http'],
      ['x-forwarded-host', 'api.test:8080'],
    ]);
  });

  it('does not change its input', () => {
    const raw = ['Connection', 'x-a', 'X-A', '1', 'Host', 'h'];
    const copy = [...raw];

    buildUpstreamRequestHeaders(raw, '127.0.0.1', 'http');

    assert.deepEqual(raw, copy);
  });
});

describe('buildClientResponseHeaders', () => {
  it('drops hop-by-hop and Connection-named headers', () => {
    const headers = buildClientResponseHeaders({
      connection: 'keep-alive, X-Up-Hop',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'proxy-authenticate': 'Basic',
      trailer: 'x-checksum',
      upgrade: 'h2c',
      'x-up-hop': '1',
      'content-type': 'text/plain',
      'set-cookie': ['a=1', 'b=2'],
    });

    assert.deepEqual(pairs(headers), [
      ['content-type', 'text/plain'],
      ['set-cookie', ['a=1', 'b=2']],
    ]);
  });

  it('reads Connection options from repeated headers', () => {
    const headers = buildClientResponseHeaders({
      connection: ['x-one', 'x-two, close'],
      'x-one': '1',
      'x-two': '2',
      'x-three': '3',
    } as unknown as Record<string, string>);

    assert.deepEqual(pairs(headers), [['x-three', '3']]);
  });
});

describe('LogLimiter', () => {
  it('allows a number of lines per window and counts the rest', () => {
    const limiter = new LogLimiter(2, 1_000);

    assert.equal(limiter.take(10_000), 0);
    assert.equal(limiter.take(10_100), 0);
    assert.equal(limiter.take(10_200), undefined);
    assert.equal(limiter.take(10_999), undefined);
    assert.equal(limiter.take(11_000), 2);
    assert.equal(limiter.take(11_001), 0);
    assert.equal(limiter.take(11_002), undefined);
  });
});
