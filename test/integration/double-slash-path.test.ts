import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { applyConfigText, Workspace, type Member } from '../faults/harness.js';
import { sendRaw, startRecordingUpstream } from '../helpers/recording-upstream.js';

/** Returns the request target of a request line such as `GET /x HTTP/1.1`. */
function targetOf(requestLine: string): string {
  return requestLine.split(' ')[1] ?? '';
}

const configText = (upstreamPort: number): string => `
upstreams:
  - {name: root, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}
  - {name: v1, targets: [{url: 'http://127.0.0.1:${upstreamPort}/v1'}]}
routes:
  - {name: hello, paths: ['/hello/**'], stripPrefix: /hello/, upstream: root}
  - {name: myprefix, paths: ['/myprefix/**'], stripPrefix: /myprefix, upstream: root}
  - {name: v4, paths: ['/v4/**'], stripPrefix: /v4, upstream: v1}
  - {name: old, paths: ['/old/**'], stripPrefix: /old, addPrefix: /new, upstream: root}
  - {name: all, paths: ['/**'], upstream: root}
`;

const UPGRADE_HEADERS =
  'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** Raw requests whose remainder after the route's stripPrefix starts with `//`. */
const REJECTED: Array<[string, string]> = [
  ['strip "/hello/"', 'GET /hello//evil.example/x HTTP/1.1\r\nHost: loom.test\r\n'],
  ['strip with query', 'GET /hello//evil.example/x?a=1 HTTP/1.1\r\nHost: loom.test\r\n'],
  ['strip "/myprefix"', 'GET /myprefix//evil.example/p HTTP/1.1\r\nHost: loom.test\r\n'],
  ['strip and base path', 'GET /v4//x HTTP/1.1\r\nHost: loom.test\r\n'],
  ['strip and addPrefix', 'GET /old//x HTTP/1.1\r\nHost: loom.test\r\n'],
  ['no route action', 'GET //evil.example/x HTTP/1.1\r\nHost: loom.test\r\n'],
  ['dot segment removed', 'GET /hello/.//evil.example/x HTTP/1.1\r\nHost: loom.test\r\n'],
  ['absolute form', 'GET http://loom.test/hello//evil.example/x HTTP/1.1\r\nHost: loom.test\r\n'],
  [
    'Expect: 100-continue',
    'POST /hello//evil.example/x HTTP/1.1\r\nHost: loom.test\r\n' +
      'Content-Length: 2\r\nExpect: 100-continue\r\n',
  ],
  [
    'WebSocket upgrade',
    `GET /hello//evil.example/x HTTP/1.1\r\nHost: loom.test\r\n${UPGRADE_HEADERS}`,
  ],
];

/** Raw requests that are forwarded, with the request line the upstream must receive. */
const FORWARDED: Array<[string, string, string]> = [
  ['later empty segment', 'GET /hello/a//b HTTP/1.1\r\nHost: loom.test\r\n', 'GET /a//b HTTP/1.1'],
  ['base path', 'GET /v4/x?q=1 HTTP/1.1\r\nHost: loom.test\r\n', 'GET /v1/x?q=1 HTTP/1.1'],
  [
    'WebSocket upgrade',
    `GET /hello/ws HTTP/1.1\r\nHost: loom.test\r\n${UPGRADE_HEADERS}`,
    'GET /ws HTTP/1.1',
  ],
];

describe('double-slash path over real sockets', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let ws: Workspace;
  let proxies: Member[];

  before(async () => {
    upstream = await startRecordingUpstream();
    ws = new Workspace();
    const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    proxies = [
      await ws.proxy('single', [cp.address]),
      await ws.proxy('workers', [cp.address], ['--workers', '2']),
    ];
    await applyConfigText(cp.address, proxies, 'double-slash.yaml', configText(upstream.port));
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
  });

  for (const name of ['single', 'workers']) {
    const proxyNamed = (): Member => proxies.find((proxy) => proxy.name === name) as Member;

    for (const [label, head] of REJECTED) {
      // Two connections each: node:cluster hands connections out round-robin, so both workers of
      // `--workers 2` usually get one.
      test(`${name}: 400 for "//" remainder, ${label}`, async () => {
        for (let attempt = 0; attempt < 2; attempt++) {
          const before = upstream.requestLines.length;
          const keepAlive = head.includes('Upgrade:') ? '' : 'Connection: close\r\n';
          const response = await sendRaw(proxyNamed().port, `${head}${keepAlive}\r\n`);

          assert.match(response, /^HTTP\/1\.1 400 /, ws.logs());
          assert.match(response, /"error":"bad_request"/);
          assert.deepEqual(upstream.requestLines.slice(before), []);
        }
      });
    }

    for (const [label, head, expected] of FORWARDED) {
      test(`${name}: forwards ${label}`, async () => {
        const before = upstream.requestLines.length;
        const keepAlive = head.includes('Upgrade:') ? '' : 'Connection: close\r\n';
        const response = await sendRaw(proxyNamed().port, `${head}${keepAlive}\r\n`);

        assert.match(response, /^HTTP\/1\.1 (200|101) /, ws.logs());
        assert.deepEqual(upstream.requestLines.slice(before), [expected]);
      });
    }
  }

  test('upstream never sees a target starting with "//"', () => {
    const targets = upstream.requestLines.map(targetOf);

    assert.ok(targets.length > 0);
    assert.deepEqual(
      targets.filter((target) => target.startsWith('//')),
      [],
    );
  });
});
