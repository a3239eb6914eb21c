import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildTable } from '../../data-plane/build-table.js';
import type { ProxyObserver } from '../../data-plane/proxy/observer.js';
import { createProxyHandlers, type ProxyHandlerOptions } from '../../data-plane/proxy/proxy.js';
import { describeInvalidHost, isValidHost } from '../../data-plane/proxy/prepare-request.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import {
  captureLogger,
  startHttpServer,
  startProxy,
  upstreamAt,
  within,
  type ProxyFixture,
  type RunningServer,
} from './harness.js';

/** One response read from a raw connection. */
interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `text` on a new connection and reads one response, framed by its Content-Length, then
 * destroys the connection. With `expectClose`, it first waits for the proxy to close the
 * connection and rejects when that does not happen within `WAIT_MS`.
 */
async function rawRequest(port: number, text: string, expectClose = false): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(text, 'latin1');
  let received = '';
  let closed = false;
  const closeEvent = new Promise((resolve) => socket.once('close', resolve));
  const response = new Promise<RawResponse>((resolve, reject) => {
    const tryParse = (): boolean => {
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return false;
      const lines = received.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      const length = Number(headers['content-length'] ?? 0);
      const body = received.slice(end + 4);
      if (body.length < length && !closed) return false;
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body });
      return true;
    };
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      tryParse();
    });
    socket.on('close', () => {
      closed = true;
      if (!tryParse()) reject(new Error(`connection closed after ${JSON.stringify(received)}`));
    });
  });
  try {
    const requestLine = JSON.stringify(text.split('\r\n')[0]);
    const result = await within(response, `a response to ${requestLine}`);
    if (expectClose) await within(closeEvent, `the proxy to close after ${requestLine}`);
    return result;
  } finally {
    socket.destroy();
  }
}

/** The request an echo upstream received, as it reports it. */
interface Echoed {
  url: string;
  headers: Record<string, string>;
}

function echoed(response: RawResponse): Echoed {
  assert.equal(response.status, 200, response.body);
  return JSON.parse(response.body) as Echoed;
}

function route(name: string, paths: string[], fields: Partial<Route> = {}): Route {
  return { name, hosts: [], paths, methods: [], upstream: 'echo', ...fields };
}

const ROUTES: Route[] = [
  route('hdr', ['/hdr/**'], { hostRewrite: 'internal.svc' }),
  route('svc', ['/svc/**'], { hosts: ['svc.local'] }),
  route('info', ['/info/**']),
  route('private', ['/private']),
  route('api', ['/api/**'], { stripPrefix: '/api', addPrefix: '/base' }),
  route('users', ['/users/:id']),
  route('orphan', ['/orphan'], { upstream: 'missing' }),
];

/** Calls of `requestFinished` the proxy made, in order. */
interface Finished {
  route: string;
  status: number;
  bytesSent: number;
}

/** Returns an observer that appends each `requestFinished` call to `finished`. */
function recordingObserver(finished: Finished[]): ProxyObserver {
  return {
    enabled: true,
    requestFinished(_req: IncomingMessage, route: string, status: number, _t, bytesSent: number) {
      finished.push({ route, status, bytesSent });
    },
    attemptFinished() {},
    retried() {},
    tunnelOpened() {},
    tunnelClosed() {},
    sendTimedOut() {},
  };
}

describe('proxy request target and Host', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  const finished: Finished[] = [];
  let version = 0;
  /** Requests the upstream received. */
  let forwarded = 0;

  const observer = recordingObserver(finished);

  const publish = async (): Promise<void> => {
    version++;
    const snapshot: Snapshot = {
      epoch: 'e1',
      version,
      hash: `h${version}`,
      routes: ROUTES,
      upstreams: [upstreamAt('echo', upstream.port)],
    };
    proxy.setTable(await buildTable(snapshot, proxy.registry));
  };

  const get = (target: string, headers: string): Promise<RawResponse> =>
    rawRequest(proxy.port, `GET ${target} HTTP/1.1\r\n${headers}Connection: close\r\n\r\n`);

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      forwarded++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    proxy = await startProxy({}, { observer });
    await publish();
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  describe('Host sent upstream', () => {
    it('rewrite survives Connection: host', async () => {
      const response = await rawRequest(
        proxy.port,
        'GET /hdr/x HTTP/1.1\r\nHost: client.example\r\nConnection: host\r\n\r\n',
      );
      assert.equal(echoed(response).headers.host, 'internal.svc');
    });

    it('rewrite applies without client Host', async () => {
      const response = await rawRequest(proxy.port, 'GET /hdr/x HTTP/1.0\r\n\r\n');
      assert.equal(echoed(response).headers.host, 'internal.svc');
    });

    it('client Host survives Connection: host', async () => {
      const response = await get('/info/x', 'Host: client.example\r\nConnection: host\r\n');
      assert.equal(echoed(response).headers.host, 'client.example');
    });
  });

  describe('Host validation', () => {
    for (const host of [
      'svc.local:@evil.example',
      'svc.local:abc',
      'svc.local:99999',
      'svc.local:80:80',
      'user@svc.local',
      'svc.local/x',
      '[::1',
      '[fe80::1%25eth0]',
      'svc.local%2',
    ]) {
      it(`rejects Host ${host}`, async () => {
        const response = await rawRequest(
          proxy.port,
          `GET /svc/x HTTP/1.1\r\nHost: ${host}\r\n\r\n`,
          true,
        );
        assert.equal(response.status, 400, response.body);
        assert.equal(JSON.parse(response.body).error, 'bad_request');
      });
    }

    for (const host of ['svc.local', 'SVC.Local', 'svc.local.', 'svc.local:8080', 'svc.local:0']) {
      it(`routes on Host ${host}`, async () => {
        const response = await get('/svc/x', `Host: ${host}\r\n`);
        assert.equal(echoed(response).headers.host, host);
      });
    }
  });

  describe('encoded slash next to a dot segment', () => {
    for (const target of [
      '/info/..%2fprivate',
      '/info/..%2Fprivate',
      '/info/%2e%2e%2fprivate',
      '/info/x%2F..',
      '/info/.%2Fx',
      '/info/a%2F..%2Fb',
      '/info/a%2F..;x',
      '/api/..%2F..%2Fetc',
    ]) {
      it(`rejects ${target}`, async () => {
        const response = await get(target, 'Host: a\r\n');
        assert.equal(response.status, 400, response.body);
        assert.match(JSON.parse(response.body).message, /encoded slash/);
      });
    }

    it('forwards a%2Fb as data', async () => {
      const response = await get('/info/a%2Fb', 'Host: a\r\n');
      assert.equal(echoed(response).url, '/info/a%2Fb');
    });

    it('forwards dots inside a name', async () => {
      const response = await get('/info/a%2F..b%2F.c', 'Host: a\r\n');
      assert.equal(echoed(response).url, '/info/a%2F..b%2F.c');
    });
  });

  describe('percent-encoded path', () => {
    // Each row: request target, the URL the upstream receives. Escapes of unreserved characters
    // are decoded, others upper-cased and kept, and dot segments removed, as docs/routing.md
    // describes. "%2520" stays, because "%25" is no unreserved character.
    const rows: Array<[string, string]> = [
      ['/info/a%2Fb?x=%2f', '/info/a%2Fb?x=%2f'],
      ['/info/a%2fb', '/info/a%2Fb'],
      ['/info/x%2520y', '/info/x%2520y'],
      ['/info/%2e%2E/info/x', '/info/x'],
      ['/info/a%2e%2eb/%7Eu', '/info/a..b/~u'],
      ['/users/%31%2F2', '/users/1%2F2'],
      ['/api/%2e%2e/api/x%2F%2520', '/base/x%2F%2520'],
    ];
    it('forwards the normalized path', async () => {
      for (const [target, url] of rows) {
        const response = await get(target, 'Host: a\r\n');
        assert.equal(response.status, 200, `${target}: ${response.body}`);
        assert.equal(JSON.parse(response.body).url, url, target);
      }
    });

    it('rejects an encoded dot-dot above the root', async () => {
      const response = await get('/info/%2e%2e/%2e%2e', 'Host: a\r\n');
      assert.equal(response.status, 400, response.body);
    });
  });

  describe('fragment in request target', () => {
    for (const target of [
      '/info/a#frag',
      '/info/a?x=1#frag',
      '/info/a?#',
      '/info/a?x=1?y#',
      'http://127.0.0.1:9001/users/1?x=1#frag',
    ]) {
      it(`rejects ${target}`, async () => {
        const response = await get(target, 'Host: a\r\n');
        assert.equal(response.status, 400, response.body);
        assert.match(JSON.parse(response.body).message, /fragment \("#"\)/);
      });
    }

    it('forwards an encoded # in the query', async () => {
      const response = await get('/info/a?x=%23frag', 'Host: a\r\n');
      assert.equal(echoed(response).url, '/info/a?x=%23frag');
    });
  });

  describe('request target forms', () => {
    it('routes an absolute-form target', async () => {
      const response = await get('http://127.0.0.1:9001/users/1?x=1', 'Host: other.example\r\n');
      const request = echoed(response);
      assert.equal(request.url, '/users/1?x=1');
      assert.equal(request.headers.host, '127.0.0.1:9001');
      assert.equal(request.headers['x-forwarded-host'], '127.0.0.1:9001');
    });

    it('routes absolute-form on its host', async () => {
      const response = await get('HTTP://svc.local/svc/a', 'Host: other.example\r\n');
      assert.equal(echoed(response).headers.host, 'svc.local');
    });

    it('accepts absolute-form without path', async () => {
      const response = await get('http://svc.local?q=1', 'Host: svc.local\r\n');
      assert.equal(response.status, 404, response.body);
      assert.equal(JSON.parse(response.body).error, 'route_not_found');
    });

    for (const target of [
      'http://svc.local:@evil.example/svc/a',
      'http://user@svc.local/svc/a',
      'http:///svc/a',
      'ftp://svc.local/svc/a',
      'svc.local/svc/a',
    ]) {
      it(`rejects target ${target}`, async () => {
        const response = await get(target, 'Host: svc.local\r\n');
        assert.equal(response.status, 400, response.body);
      });
    }

    it('answers OPTIONS * with 404', async () => {
      const response = await rawRequest(
        proxy.port,
        'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
      );
      assert.equal(response.status, 404, response.body);
      assert.equal(JSON.parse(response.body).error, 'route_not_found');
    });

    it('rejects * with GET', async () => {
      const response = await get('*', 'Host: a\r\n');
      assert.equal(response.status, 400, response.body);
    });

    it('answers CONNECT with 501', async () => {
      const response = await rawRequest(
        proxy.port,
        'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n',
        true,
      );
      assert.equal(response.status, 501);
      assert.equal(response.headers['content-type'], 'application/json');
      assert.equal(JSON.parse(response.body).error, 'not_implemented');
    });
  });

  describe('HTTP version', () => {
    for (const requestLine of [
      'GET /info/x HTTP/2.0',
      'GET /info/x HTTP/0.9',
      'GET /info/x',
      'POST /info/x HTTP/2.0',
    ]) {
      it(`rejects ${requestLine}`, async () => {
        const before = forwarded;
        const response = await rawRequest(
          proxy.port,
          `${requestLine}\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /info/y HTTP/1.1\r\nHost: a\r\n\r\n`,
          true,
        );

        assert.equal(response.status, 505, response.body);
        assert.equal(JSON.parse(response.body).error, 'http_version_not_supported');
        assert.equal(forwarded, before, 'a request reached the upstream');
      });
    }
  });

  describe('local responses', () => {
    it('counts body bytes of a 404', async () => {
      const before = finished.length;
      const response = await get('/nope', 'Host: a\r\n');
      assert.equal(response.status, 404);
      const entry = finished[before];
      assert.equal(entry.status, 404);
      assert.equal(entry.bytesSent, Number(response.headers['content-length']));
      assert.ok(entry.bytesSent > 0);
    });

    it('counts no bytes for HEAD', async () => {
      const before = finished.length;
      const response = await rawRequest(
        proxy.port,
        'HEAD /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
      );
      assert.equal(response.status, 404);
      assert.equal(finished[before].bytesSent, 0);
    });

    it('counts body bytes of CONNECT', async () => {
      const before = finished.length;
      const response = await rawRequest(proxy.port, 'CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n');
      assert.equal(finished[before].status, 501);
      assert.equal(finished[before].bytesSent, Buffer.byteLength(response.body));
    });

    it('names a missing upstream', async () => {
      const logged = (): number =>
        proxy.logs.filter(
          (line) => line.msg === 'route upstream missing from routing configuration',
        ).length;
      const start = logged();
      for (let i = 0; i < 3; i++) {
        const response = await get('/orphan', 'Host: a\r\n');
        assert.equal(response.status, 502);
        const body = JSON.parse(response.body);
        assert.equal(body.error, 'upstream_unavailable');
        assert.match(body.message, /not in the routing configuration/);
        assert.equal(body.route, 'orphan');
      }
      assert.equal(logged() - start, 1);
      await publish();
      await get('/orphan', 'Host: a\r\n');
      assert.equal(logged() - start, 2);
    });
  });
});

describe('escapedSlashes reject', () => {
  let upstream: RunningServer;
  let proxy: ProxyFixture;
  const finished: Finished[] = [];
  const observer = recordingObserver(finished);

  const get = (target: string): Promise<RawResponse> =>
    rawRequest(proxy.port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    proxy = await startProxy({}, { observer, escapedSlashes: 'reject' });
    const snapshot: Snapshot = {
      epoch: 'e1',
      version: 1,
      hash: 'h1',
      routes: ROUTES,
      upstreams: [upstreamAt('echo', upstream.port)],
    };
    proxy.setTable(await buildTable(snapshot, proxy.registry));
  });

  after(async () => {
    await proxy.close();
    await upstream.close();
  });

  for (const target of ['/users/a%2Fb', '/users/a%2fb', '/info/x/a%2F']) {
    it(`rejects ${target} with its route`, async () => {
      finished.length = 0;
      const response = await get(target);

      assert.equal(response.status, 400, response.body);
      assert.equal(JSON.parse(response.body).error, 'escaped_slash');
      assert.equal(finished[0]?.route, target.startsWith('/users/') ? 'users' : 'info');
    });
  }

  it('rejects unmatched path as unmatched', async () => {
    finished.length = 0;
    const response = await get('/nowhere%2Fx');

    assert.equal(response.status, 400, response.body);
    assert.equal(JSON.parse(response.body).error, 'escaped_slash');
    assert.equal(finished[0]?.route, '(unmatched)');
  });

  it('forwards %252F and query %2F', async () => {
    assert.equal(echoed(await get('/users/a%252Fb')).url, '/users/a%252Fb');
    assert.equal(echoed(await get('/users/ab?x=%2F')).url, '/users/ab?x=%2F');
  });

  it('rejects an unknown action', () => {
    const { logger } = captureLogger();
    const options = { getTable: () => undefined, logger, escapedSlashes: 'drop' };
    assert.throws(() => createProxyHandlers(options as ProxyHandlerOptions), {
      code: 'LOOM_INVALID_ARGUMENT',
      message: 'invalid escapedSlashes "drop": expected "keep" or "reject"',
    });
  });
});

describe('isValidHost', () => {
  const valid = [
    '',
    'a',
    'example.com',
    'example.com.',
    '127.0.0.1',
    '127.0.0.1:8080',
    'example.com:',
    'example.com:65535',
    'example.com:00080',
    '[::1]',
    '[::1]:443',
    '[2001:db8::1]',
    '[v1.fe80::a+en1]',
    'a%20b',
    "a!$&'()*+,;=b",
    'under_score~',
  ];
  const invalid = [
    'example.com:65536',
    'example.com:-1',
    'example.com:8o',
    'example.com:80:80',
    'a@b',
    'a/b',
    'a b',
    'a?b',
    'a#b',
    'a%2',
    'a%zz',
    'a\\b',
    'é.example',
    '[::1',
    '[::1]x',
    '[::1]:x',
    '[fe80::1%eth0]',
    '[127.0.0.1]',
    '[]',
    '[v1.]',
  ];
  for (const host of valid) {
    it(`accepts ${JSON.stringify(host)}`, () => assert.equal(isValidHost(host), true));
  }
  for (const host of invalid) {
    it(`rejects ${JSON.stringify(host)}`, () => assert.equal(isValidHost(host), false));
  }

  describe('describeInvalidHost', () => {
    for (const host of valid) {
      it(`has no reason for ${JSON.stringify(host)}`, () => {
        assert.equal(describeInvalidHost(host), undefined);
      });
    }
    for (const host of invalid) {
      it(`has a reason for ${JSON.stringify(host)}`, () => {
        assert.equal(typeof describeInvalidHost(host), 'string');
      });
    }
    const reasons: [string, string][] = [
      [
        'svc.local:80:80',
        'the port "80:80" is not a decimal number; a Host value has at most one ":" outside brackets',
      ],
      ['svc.local:@evil.example', 'the port "@evil.example" is not a decimal number'],
      ['example.com:65536', 'the port 65536 is above 65535'],
      ['a@b', 'the character "@" is not allowed in a host name'],
      [
        'é.example',
        'the character "é" is not allowed in a host name; write the name in its ASCII (punycode) form',
      ],
      ['a%zz', '"%" at offset 1 is not followed by two hex digits'],
      ['[::1', 'the IP literal has no closing "]"'],
      ['[::1]x', 'only ":" and a port may follow "]", not "x"'],
      [
        '[fe80::1%eth0]',
        '[fe80::1%eth0] is neither an IPv6 address without a zone nor an IPvFuture literal',
      ],
      ['[::1]:99999', 'the port 99999 is above 65535'],
    ];
    for (const [host, reason] of reasons) {
      it(`explains ${JSON.stringify(host)}`, () => assert.equal(describeInvalidHost(host), reason));
    }
  });
});
