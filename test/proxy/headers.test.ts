import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import {
  buildClientResponseHeaders,
  buildUpstreamRequestHeaders,
  scanRequestHead,
  type ClientInfo,
  type ResponseHead,
} from '../../data-plane/proxy/headers.js';
import { HeaderNameCache } from '../../data-plane/proxy/header-names.js';
import { LogLimiter } from '../../common/log-limiter.js';
import { compileRouteActions } from '../../data-plane/proxy/route-actions.js';
import { TrustedProxies } from '../../data-plane/proxy/trusted-proxies.js';

function pairs(flat: readonly unknown[]): Array<[unknown, unknown]> {
  const result: Array<[unknown, unknown]> = [];
  for (let i = 0; i < flat.length; i += 2) {
    result.push([flat[i], flat[i + 1]]);
  }
  return result;
}

const NO_ACTIONS = compileRouteActions({
  name: 'r',
  hosts: [],
  paths: ['/'],
  methods: [],
  upstream: 'u',
});

function client(fields: Partial<ClientInfo> = {}): ClientInfo {
  return { address: '127.0.0.1', trusted: false, protocol: 'http', port: '8080', ...fields };
}

function build(raw: string[], info = client(), actions = NO_ACTIONS): string[] {
  return buildUpstreamRequestHeaders(raw, scanRequestHead(raw), info, actions);
}

/** Builds the client headers of raw upstream headers given as text; returns them and the head. */
function copyResponse(
  raw: string[],
  route: Partial<Route> = {},
): { headers: string[]; head: ResponseHead } {
  const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
  const actions = compileRouteActions({
    name: 'r',
    hosts: [],
    paths: ['/'],
    methods: [],
    upstream: 'u',
    ...route,
  });
  const headers = buildClientResponseHeaders(
    raw.map((text) => Buffer.from(text, 'latin1')),
    actions,
    head,
  );
  return { headers, head };
}

function responseHeaders(raw: string[], route: Partial<Route> = {}): string[] {
  return copyResponse(raw, route).headers;
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
      'TE', 'gzip',
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

    const headers = build(raw);

    assert.deepEqual(pairs(headers), [
      ['host', 'api.test'],
      ['X-Kept', 'yes'],
      ['x-forwarded-for', '127.0.0.1'],
      ['x-forwarded-proto', 'http'],
      ['x-forwarded-host', 'api.test'],
      ['x-forwarded-port', '8080'],
      ['via', '1.1 loom'],
    ]);
  });

  it('sends TE trailers when the client accepts trailers', () => {
    const headers = build(['Host', 'h', 'TE', 'trailers, deflate;q=0.5']);

    assert.deepEqual(pairs(headers).slice(0, 2), [
      ['host', 'h'],
      ['te', 'trailers'],
    ]);
  });

  it('keeps case, order and repeated headers', () => {
    const raw = ['Accept', 'a/b', 'X-Multi', '1', 'Cookie', 'a=1', 'X-Multi', '2'];

    const headers = build(raw, client({ address: undefined, protocol: 'https' }));

    // prettier-ignore
    assert.deepEqual(headers, [
      'Accept', 'a/b',
      'X-Multi', '1',
      'Cookie', 'a=1',
      'X-Multi', '2',
      'x-forwarded-proto', 'https',
      'x-forwarded-port', '8080',
      'via', '1.1 loom',
    ]);
  });

  it('replaces X-Forwarded headers of untrusted clients', () => {
    // prettier-ignore
    const raw = [
      'X-Forwarded-For', '203.0.113.7',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Host', 'spoofed.test',
      'X-Forwarded-Port', '443',
      'X-Forwarded-Prefix', '/admin',
      'Forwarded', 'for=203.0.113.7',
      'X-Real-IP', '203.0.113.7',
      'Host', 'api.test:8080',
    ];

    const headers = build(raw, client({ address: '::1' }));

    assert.deepEqual(pairs(headers), [
      ['host', 'api.test:8080'],
      ['x-forwarded-for', '::1'],
      ['x-forwarded-proto', 'http'],
      ['x-forwarded-host', 'api.test:8080'],
      ['x-forwarded-port', '8080'],
      ['via', '1.1 loom'],
    ]);
  });

  it('appends to X-Forwarded-For of trusted clients', () => {
    // prettier-ignore
    const raw = [
      'X-Forwarded-For', '203.0.113.7',
      'x-forwarded-for', '198.51.100.2, 10.0.0.1',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Host', 'www.example.test',
      'Forwarded', 'for=203.0.113.7',
      'Host', 'api.test:8080',
    ];

    const headers = build(raw, client({ address: '10.0.0.2', trusted: true }));

    assert.deepEqual(pairs(headers), [
      ['host', 'api.test:8080'],
      ['X-Forwarded-Proto', 'https'],
      ['X-Forwarded-Host', 'www.example.test'],
      ['Forwarded', 'for=203.0.113.7'],
      ['x-forwarded-for', '203.0.113.7, 198.51.100.2, 10.0.0.1, 10.0.0.2'],
      ['x-forwarded-port', '8080'],
      ['via', '1.1 loom'],
    ]);
  });

  it('applies route header actions and host rewrite', () => {
    const actions = compileRouteActions({
      name: 'r',
      hosts: [],
      paths: ['/'],
      methods: [],
      upstream: 'u',
      hostRewrite: 'internal.test',
      requestHeaders: { set: [{ name: 'x-env', value: 'prod' }], remove: ['x-debug'] },
    });
    const raw = ['Host', 'api.test', 'X-Debug', '1', 'X-Env', 'dev', 'Accept', '*/*'];

    const headers = build(raw, client(), actions);

    assert.deepEqual(pairs(headers), [
      ['host', 'internal.test'],
      ['Accept', '*/*'],
      ['x-forwarded-for', '127.0.0.1'],
      ['x-forwarded-proto', 'http'],
      ['x-forwarded-host', 'api.test'],
      ['x-forwarded-port', '8080'],
      ['via', '1.1 loom'],
      ['x-env', 'prod'],
    ]);
  });

  it('appends Via to client values', () => {
    const raw = ['Via', '1.1 edge-a', 'Host', 'api.test', 'via', 'HTTP/2.0 edge-b'];

    assert.deepEqual(build(raw).slice(-2), ['via', '1.1 edge-a, HTTP/2.0 edge-b, 1.1 loom']);
    assert.deepEqual(
      buildUpstreamRequestHeaders(raw, scanRequestHead(raw), client(), NO_ACTIONS, 0).slice(-2),
      ['via', '1.1 edge-a, HTTP/2.0 edge-b, 1.0 loom'],
    );
  });

  it('drops Via named in Connection', () => {
    const raw = ['Connection', 'via', 'Via', '1.1 edge-a', 'Host', 'api.test'];

    assert.deepEqual(build(raw).slice(-2), ['via', '1.1 loom']);
  });

  it('route Via actions keep Loom entries', () => {
    const route = { name: 'r', hosts: [], paths: ['/'], methods: [], upstream: 'u' };
    const removing = compileRouteActions({
      ...route,
      requestHeaders: { set: [], remove: ['Via'] },
    });
    const setting = compileRouteActions({
      ...route,
      requestHeaders: {
        set: [
          { name: 'via', value: '1.1 gateway' },
          { name: 'X-Env', value: 'prod' },
          { name: 'Via', value: '' },
        ],
        remove: [],
      },
    });
    const raw = ['Via', '1.1 edge-a, 1.1 loom', 'Host', 'api.test', 'via', '1.0 loom ,1.1 edge-b'];
    const plain = ['Via', '1.1 edge-a', 'Host', 'api.test'];

    const viaOf = (headers: string[]): string[] =>
      headers.filter((_, i) => i % 2 === 1 && headers[i - 1].toLowerCase() === 'via');

    assert.deepEqual(viaOf(build(raw, client(), removing)), ['1.1 loom, 1.0 loom, 1.1 loom']);
    assert.deepEqual(viaOf(build(plain, client(), removing)), ['1.1 loom']);
    assert.deepEqual(viaOf(build(raw, client(), setting)), [
      '1.1 gateway, 1.1 loom, 1.0 loom, 1.1 loom',
    ]);
    assert.deepEqual(viaOf(build(plain, client(), setting)), ['1.1 gateway, 1.1 loom']);
    assert.equal(build(plain, client(), setting).at(-2), 'X-Env');
    assert.equal(setting.requestVia, '1.1 gateway');
    assert.deepEqual(setting.requestSet, ['X-Env', 'prod']);
  });

  it('keeps Host named in Connection', () => {
    const raw = ['Connection', 'Host, x-a', 'Host', 'api.test', 'X-A', '1'];

    const headers = build(raw);

    assert.deepEqual(pairs(headers)[0], ['host', 'api.test']);
    assert.equal(pairs(headers).length, 6);
  });

  it('rewrites Host the client omitted', () => {
    const actions = compileRouteActions({
      name: 'r',
      hosts: [],
      paths: ['/'],
      methods: [],
      upstream: 'u',
      hostRewrite: 'internal.test',
    });

    const headers = build(['Connection', 'host', 'Accept', '*/*'], client(), actions);

    assert.deepEqual(pairs(headers).slice(0, 2), [
      ['host', 'internal.test'],
      ['Accept', '*/*'],
    ]);
  });

  it('sends no Host without one', () => {
    const headers = build(['Accept', '*/*']);

    assert.equal(
      headers.some((name) => name.toLowerCase() === 'host'),
      false,
    );
  });

  it('does not change its input', () => {
    const raw = ['Connection', 'x-a', 'X-A', '1', 'Host', 'h'];
    const copy = [...raw];

    build(raw);

    assert.deepEqual(raw, copy);
  });
});

describe('scanRequestHead', () => {
  it('collects framing and routing headers', () => {
    // prettier-ignore
    const head = scanRequestHead([
      'host', 'a.test',
      'Host', 'b.test',
      'Transfer-Encoding', 'gzip',
      'transfer-encoding', 'chunked',
      'Content-Length', '5',
    ]);

    assert.equal(head.host, 'a.test');
    assert.equal(head.hostCount, 2);
    assert.equal(head.transferEncoding, 'gzip, chunked');
    assert.equal(head.contentLength, '5');
  });

  it('counts Via entries of Loom', () => {
    const cases: Array<[string[], number]> = [
      [['1.1 loom'], 1],
      [['1.0 loom, 1.1 loom'], 2],
      [['1.1 loom', 'HTTP/1.1 edge, 1.1 loom'], 2],
      [['1.1 loom ,1.1\tloom'], 2],
      [['1.1 edge, 1.1 cache'], 0],
      [['1.1 loomx, 1.1 x-loom, 2 loom, 1.1 loom (Loom)'], 0],
    ];
    for (const [values, expected] of cases) {
      const raw = values.flatMap((value) => ['Via', value]);
      assert.equal(scanRequestHead(raw).loomVias, expected, values.join(' | '));
    }
  });
});

describe('TrustedProxies', () => {
  it('matches addresses and ranges', () => {
    const trusted = new TrustedProxies(['10.0.0.0/8', '127.0.0.1', 'fd00::/8']);

    assert.equal(trusted.includes('10.200.3.4'), true);
    assert.equal(trusted.includes('127.0.0.1'), true);
    assert.equal(trusted.includes('::ffff:10.1.2.3'), true);
    assert.equal(trusted.includes('fd12::1'), true);
    assert.equal(trusted.includes('127.0.0.2'), false);
    assert.equal(trusted.includes('11.0.0.1'), false);
    assert.equal(trusted.includes(undefined), false);
  });

  it('rejects invalid entries by name', () => {
    assert.throws(
      () => new TrustedProxies(['10.0.0.0/33', 'proxy.test', '127.0.0.1']),
      /invalid trusted proxy "10.0.0.0\/33", "proxy.test"/,
    );
  });
});

describe('buildClientResponseHeaders', () => {
  it('drops hop-by-hop and Connection-named headers', () => {
    // prettier-ignore
    const headers = responseHeaders([
      'Connection', 'keep-alive, X-Up-Hop',
      'Keep-Alive', 'timeout=5',
      'Transfer-Encoding', 'chunked',
      'Proxy-Authenticate', 'Basic',
      'Upgrade', 'h2c',
      'X-Up-Hop', '1',
      'Content-Type', 'text/plain',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
    ]);

    assert.deepEqual(pairs(headers), [
      ['Content-Type', 'text/plain'],
      ['Set-Cookie', 'a=1'],
      ['Set-Cookie', 'b=2'],
    ]);
  });

  it('reads Connection options from repeated headers', () => {
    // prettier-ignore
    const headers = responseHeaders([
      'connection', 'x-one',
      'connection', 'x-two, close',
      'x-one', '1',
      'x-two', '2',
      'x-three', '3',
    ]);

    assert.deepEqual(pairs(headers), [['x-three', '3']]);
  });

  it('applies route response header actions', () => {
    const headers = responseHeaders(['Server', 'app/1.0', 'X-Served-By', 'app', 'ETag', '"1"'], {
      responseHeaders: { set: [{ name: 'x-served-by', value: 'loom' }], remove: ['server'] },
    });

    assert.deepEqual(pairs(headers), [
      ['ETag', '"1"'],
      ['x-served-by', 'loom'],
    ]);
  });
});

describe('HeaderNameCache', () => {
  it('returns the same entry on a hit', () => {
    const cache = new HeaderNameCache();
    const first = cache.lookup(Buffer.from('Content-Type'));
    const second = cache.lookup(Buffer.from('xContent-Type').subarray(1));

    assert.equal(first.text, 'Content-Type');
    assert.equal(first.lower, 'content-type');
    assert.equal(second, first);
  });

  it('keeps names that differ in case apart', () => {
    const cache = new HeaderNameCache();
    const upper = cache.lookup(Buffer.from('X-Trace'));
    const lower = cache.lookup(Buffer.from('x-trace'));
    const upperAgain = cache.lookup(Buffer.from('X-Trace'));

    assert.equal(upper.text, 'X-Trace');
    assert.equal(lower.text, 'x-trace');
    assert.equal(upperAgain.text, 'X-Trace');
    assert.equal(upperAgain.lower, 'x-trace');
  });

  it('converts every name correctly', () => {
    const cache = new HeaderNameCache();
    // Many names share one length, so they share and replace slots, and a long name skips the cache.
    const names = Array.from({ length: 600 }, (_, i) => `X-H${String(i).padStart(4, '0')}`);
    names.push('X-' + 'Long'.repeat(20), '\xe9t\xe9');
    for (let round = 0; round < 2; round++) {
      for (const name of names) {
        const entry = cache.lookup(Buffer.from(name, 'latin1'));
        assert.equal(entry.text, name);
        assert.equal(entry.lower, name.toLowerCase());
      }
    }
  });

  it('gives equal headers on cache hits', () => {
    const raw = ['Connection', 'X-Hop', 'X-Hop', '1', 'Content-Length', '12', 'ETag', '"1"'];
    const first = responseHeaders(raw);
    const second = responseHeaders(raw);

    assert.deepEqual(pairs(first), [
      ['Content-Length', '12'],
      ['ETag', '"1"'],
    ]);
    assert.deepEqual(second, first);
  });

  it('returns values that change under one name', () => {
    // Date repeats, then changes, and ETag changes on every response, past the misses after
    // which a name stops remembering its values.
    for (let i = 0; i < 40; i++) {
      const date = `Sun, 06 Dec 2026 00:00:${String(Math.floor(i / 8)).padStart(2, '0')} GMT`;
      const headers = responseHeaders(['Date', date, 'ETag', `"${i}"`, 'Content-Length', `${i}`]);

      assert.deepEqual(pairs(headers), [
        ['Date', date],
        ['ETag', `"${i}"`],
        ['Content-Length', `${i}`],
      ]);
    }
  });

  it('reports Content-Length and Transfer-Encoding', () => {
    const raw = [
      'Content-Length',
      '12',
      'Transfer-Encoding',
      'gzip',
      'Transfer-Encoding',
      'chunked',
    ];
    const { head } = copyResponse(raw);

    assert.equal(head.contentLength, '12');
    assert.equal(head.transferEncoding, 'gzip, chunked');
    assert.equal(head.connectionTokens, undefined);
  });

  it('reports the Connection options it dropped', () => {
    const raw = ['Content-Length', '1', 'Connection', 'X-Hop', 'X-Hop', '1', 'Trailer', 'x-sum'];
    const { headers, head } = copyResponse(raw);

    assert.deepEqual(pairs(headers), [
      ['Content-Length', '1'],
      ['Trailer', 'x-sum'],
    ]);
    assert.deepEqual(head.connectionTokens, ['x-hop']);
    assert.equal(head.contentLength, '1');
    assert.equal(head.trailerIndex, 2);
  });

  it('leaves no Trailer index when the route removes Trailer', () => {
    const raw = ['Trailer', 'x-sum', 'Content-Type', 'text/plain'];
    const { headers, head } = copyResponse(raw, {
      responseHeaders: { set: [], remove: ['trailer'] },
    });

    assert.deepEqual(pairs(headers), [['Content-Type', 'text/plain']]);
    assert.equal(head.trailerIndex, -1);
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
