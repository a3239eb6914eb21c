import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { parseConfigTexts } from '../../config/load.js';
import { applyConfig, waitForVersion, Workspace, type Member } from '../faults/harness.js';

const WAIT_MS = 5_000;

/**
 * A raw HTTP/1.1 upstream that records the request line of every request. It responds with 101
 * to a request with an Upgrade header and with 200 to any other, and closes each connection
 * after the response. The recorded line is exactly what the proxy wrote on the wire.
 */
async function startRecordingUpstream(): Promise<{
  server: Server;
  port: number;
  requestLines: string[];
}> {
  const requestLines: string[] = [];
  const server = createServer((socket: Socket) => {
    let head = '';
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.removeAllListeners('data');
      requestLines.push(head.slice(0, head.indexOf('\r\n')));
      const upgrade = /^upgrade:/im.test(head.slice(0, end));
      socket.end(
        upgrade
          ? 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
          : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok',
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, requestLines };
}

/** Writes `text` on a new connection and returns what arrives until the proxy closes it. */
async function sendRaw(port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => socket.destroy());
  socket.write(text);
  const timer = setTimeout(() => socket.destroy(), WAIT_MS);
  await once(socket, 'close');
  clearTimeout(timer);
  return Buffer.concat(chunks).toString('latin1');
}

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
    const config = parseConfigTexts([
      { file: 'double-slash.yaml', text: configText(upstream.port) },
    ]);
    const version = await applyConfig(cp.address, config);
    for (const proxy of proxies) {
      await waitForVersion(proxy.adminPort, version, 30_000);
    }
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
