import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { applyConfigText, Workspace, type Member } from '../faults/harness.js';
import { sendRaw, startRecordingUpstream } from '../helpers/recording-upstream.js';
import { sampleValue, scrape } from '../operations/exposition.js';

const configText = (upstreamPort: number): string => `
upstreams:
  - {name: root, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}
routes:
  - {name: admin, paths: ['/admin/**'], upstream: root}
  - {name: files, paths: ['/files/:name'], methods: [GET], upstream: root}
  - {name: upload, paths: ['/upload/:name'], upstream: root}
  - {name: docs, paths: ['/docs/a%2Fb'], upstream: root}
`;

const UPGRADE_HEADERS =
  'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** What a proxy does with one request: forward this request line, or respond with an error. */
type Outcome = { forwarded: string } | { status: number; error: string };

interface PathCase {
  label: string;
  /** Request line and headers, without the blank line that ends the head. */
  head: string;
  /** Outcome under `--escaped-slashes keep`; undefined when the case is sent to reject only. */
  keep?: Outcome;
  reject: Outcome;
}

const ESCAPED_SLASH: Outcome = { status: 400, error: 'escaped_slash' };
const BACKSLASH: Outcome = { status: 400, error: 'bad_request' };

const CASES: PathCase[] = [
  {
    label: '"%2F" in param segment',
    head: 'GET /files/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /files/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2f" in param segment',
    head: 'GET /files/a%2fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /files/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2F" in static route',
    head: 'GET /docs/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /docs/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2f" in static route',
    head: 'GET /docs/a%2fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /docs/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2F" under catch-all',
    head: 'GET /admin/x%2Fy HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /admin/x%2Fy HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2F" that matches no route',
    head: 'GET /admin%2Fusers HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { status: 404, error: 'route_not_found' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2F" with method not allowed',
    head: 'DELETE /files/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { status: 405, error: 'method_not_allowed' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%2F" in absolute form',
    head: 'GET http://loom.test/files/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /files/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: '"%252F" decoded once is data',
    head: 'GET /files/a%252Fb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /files/a%252Fb HTTP/1.1' },
    reject: { forwarded: 'GET /files/a%252Fb HTTP/1.1' },
  },
  {
    label: '"%2F" in query only',
    head: 'GET /files/ab?next=%2Fadmin%2fx HTTP/1.1\r\nHost: loom.test\r\n',
    keep: { forwarded: 'GET /files/ab?next=%2Fadmin%2fx HTTP/1.1' },
    reject: { forwarded: 'GET /files/ab?next=%2Fadmin%2fx HTTP/1.1' },
  },
  {
    label: '"%5C" in param segment',
    head: 'GET /files/a%5Cb HTTP/1.1\r\nHost: loom.test\r\n',
    keep: BACKSLASH,
    reject: BACKSLASH,
  },
  {
    label: '"%5c" in static segment',
    head: 'GET /admin%5cusers HTTP/1.1\r\nHost: loom.test\r\n',
    keep: BACKSLASH,
    reject: BACKSLASH,
  },
  {
    label: 'WebSocket upgrade',
    head: `GET /files/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n${UPGRADE_HEADERS}`,
    keep: { forwarded: 'GET /files/a%2Fb HTTP/1.1' },
    reject: ESCAPED_SLASH,
  },
  {
    label: 'Expect: 100-continue',
    head:
      'POST /upload/a%2Fb HTTP/1.1\r\nHost: loom.test\r\n' +
      'Content-Length: 2\r\nExpect: 100-continue\r\n',
    reject: ESCAPED_SLASH,
  },
];

/** Parses the JSON body of a raw response; returns undefined when it has none. */
function jsonBody(response: string): Record<string, unknown> | undefined {
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  return body === '' ? undefined : (JSON.parse(body) as Record<string, unknown>);
}

/** Reads and parses the lines of an access log file. */
function accessLogLines(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('--escaped-slashes over real sockets', { timeout: 180_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let ws: Workspace;
  let proxies: Member[];
  let accessLog: string;

  before(async () => {
    upstream = await startRecordingUpstream();
    ws = new Workspace();
    accessLog = join(ws.dir, 'access.log');
    const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    // "REJECT" checks that the flag value is read in any case.
    proxies = [
      await ws.proxy('keep', [cp.address]),
      await ws.proxy(
        'reject',
        [cp.address],
        ['--escaped-slashes', 'reject', '--access-log', accessLog],
      ),
      await ws.proxy(
        'reject-workers',
        [cp.address],
        ['--escaped-slashes', 'REJECT', '--workers', '2'],
      ),
    ];
    await applyConfigText(cp.address, proxies, 'escaped.yaml', configText(upstream.port));
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
  });

  for (const name of ['keep', 'reject', 'reject-workers']) {
    const proxyNamed = (): Member => proxies.find((proxy) => proxy.name === name) as Member;

    for (const { label, head, keep, reject } of CASES) {
      const expected = name === 'keep' ? keep : reject;
      if (expected === undefined) continue;

      // Two connections each: node:cluster hands connections out round-robin, so both workers of
      // `--workers 2` usually get one.
      test(`${name}: ${label}`, async () => {
        for (let attempt = 0; attempt < 2; attempt++) {
          const before = upstream.requestLines.length;
          const keepAlive = head.includes('Upgrade:') ? '' : 'Connection: close\r\n';
          const response = await sendRaw(proxyNamed().port, `${head}${keepAlive}\r\n`);
          const received = upstream.requestLines.slice(before);

          if ('forwarded' in expected) {
            assert.match(response, /^HTTP\/1\.1 (200|101) /, ws.logs());
            assert.deepEqual(received, [expected.forwarded]);
            continue;
          }
          assert.match(response, new RegExp(`^HTTP/1\\.1 ${expected.status} `), ws.logs());
          assert.equal(jsonBody(response)?.error, expected.error, response);
          assert.deepEqual(received, []);
          if (expected === ESCAPED_SLASH) {
            assert.match(String(jsonBody(response)?.message), /--escaped-slashes reject/);
          }
        }
      });
    }
  }

  test('reject: access log names matched route', async () => {
    const lines = accessLogLines(accessLog);
    const line = (path: string): Record<string, unknown> | undefined =>
      lines.find((entry) => entry.path === path);

    assert.equal(line('/files/a%2Fb')?.status, 400, JSON.stringify(lines));
    assert.equal(line('/files/a%2Fb')?.route, 'files');
    assert.equal(line('/docs/a%2Fb')?.status, 400);
    assert.equal(line('/docs/a%2Fb')?.route, 'docs');
    assert.equal(line('/admin%2Fusers')?.status, 400);
    assert.equal(line('/admin%2Fusers')?.route, '(unmatched)');
    assert.equal(line('/files/a%252Fb')?.status, 200);
  });

  test('reject: metrics count 400s by route', async () => {
    for (const name of ['reject', 'reject-workers']) {
      const member = proxies.find((proxy) => proxy.name === name) as Member;
      const families = await scrape(`http://127.0.0.1:${member.adminPort}/metrics`);
      const count = (route: string): number | undefined =>
        sampleValue(families, 'loom_proxy_requests_total', { route, status_class: '4xx' });

      // Two attempts of each case. Route files: "%2F" and "%2f" in the param, the absolute form
      // and the upgrade. Route docs: "%2F" and "%2f". A path that matched no route, under any
      // method, is unmatched, and so are the "%5C" and "%5c" paths that the router rejects.
      assert.equal(count('files'), 8, name);
      assert.equal(count('docs'), 4, name);
      assert.equal(count('admin'), 2, name);
      assert.equal(count('upload'), 2, name);
      assert.equal(count('(unmatched)'), 8, name);
    }
  });
});
