import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { programEntry, ROOT } from '../../scripts/processes.js';
import { applyConfigText, Workspace, type Member } from '../faults/harness.js';
import { loomctl as loomctlAt, type CliResult } from '../helpers/cli.js';
import { sendRaw } from '../helpers/recording-upstream.js';

/** Runs `bin/loomctl.js ARGS` without a control plane; a run past 60 s is killed (code -1). */
function loomctl(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [programEntry('loomctl'), ...args],
      { cwd: ROOT, timeout: 60_000, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) code = typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const dir = mkdtempSync(join(tmpdir(), 'loom-explain-methods-'));
const config = join(dir, 'loom.yaml');
writeFileSync(
  config,
  [
    'upstreams:',
    '  - name: users',
    '    targets: [{url: "http://127.0.0.1:9001"}]',
    'routes:',
    '  - name: get-user',
    '    paths: [/users/:id]',
    '    methods: [GET]',
    '    upstream: users',
    '  - name: under-c',
    '    paths: [/c/**]',
    '    upstream: users',
    '  - name: under-x',
    '    paths: [/x/*]',
    '    upstream: users',
    '',
  ].join('\n'),
);
after(() => rmSync(dir, { recursive: true, force: true }));

// The proxy's HTTP parser (Node.js) responds with 400 to these methods before routing.
describe('explain of methods that proxies reject before routing', () => {
  for (const method of ['GETT', 'get']) {
    test(`explain ${method} reports 400`, async () => {
      const result = await loomctl(['explain', method, '/users/1', '-f', config]);
      assert.doesNotMatch(result.stdout, /^route get-user /m, result.stdout);
      assert.doesNotMatch(result.stdout, /405/, result.stdout);
      assert.match(result.stdout + result.stderr, /400/, result.stdout + result.stderr);
    });
  }

  test('lowercase method suggests upper case', async () => {
    const result = await loomctl(['explain', 'get', '/users/1', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^ {2}methods are case-sensitive: did you mean GET\?$/m);
  });

  test('non-token method is usage error', async () => {
    const result = await loomctl(['explain', 'G ET', '/users/1', '-f', config]);
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stderr, /^error: invalid method "G ET": a method is one token /m);
    assert.match(result.stderr, /give one such as GET$/m);
    assert.equal(result.stdout, '');
  });
});

describe('explain of a prefix catch-all', () => {
  test('segment named as in pattern', async () => {
    const result = await loomctl(['explain', 'GET', '/c/x', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /catch-all \*\* = "x"/, result.stdout);
  });

  test('bare catch-all named as in pattern', async () => {
    const result = await loomctl(['explain', 'GET', '/x/y', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^ {2}segment 2: catch-all \* = "y"$/m, result.stdout);
  });
});

const servedConfig = `
upstreams:
  - {name: root, targets: [{url: 'http://127.0.0.1:9'}]}
routes:
  - {name: hello, hosts: [c7.test], paths: ['/hello/**'], stripPrefix: /hello/, upstream: root}
  - {name: get-user, paths: ['/users/:id'], methods: [GET], upstream: root}
  - {name: item, paths: ['/item/:id'], upstream: root}
  - {name: all, paths: ['/all/**'], upstream: root}
  - {name: d-any, hosts: [d.test], paths: ['/**'], upstream: root}
`;

/** A request, as sent to a proxy and as given to explain. */
interface Case {
  method: string;
  target: string;
  host: string;
}

const CASES: Case[] = [
  { method: 'GETT', target: '/users/1', host: 'a.test' },
  { method: 'get', target: '/users/1', host: 'a.test' },
  { method: 'POST', target: '/users/1', host: 'a.test' },
  { method: 'GET', target: '/users/1', host: 'a.test' },
  { method: 'GET', target: '/hello//world', host: 'c7.test' },
  { method: 'GET', target: '/hello/a//b', host: 'c7.test' },
  { method: 'GET', target: 'http://c7.test/hello//world?q=1', host: 'c7.test' },
  { method: 'GET', target: '/item/123#frag', host: 'a.test' },
  { method: 'GET', target: '/item/123?q=1#frag', host: 'a.test' },
  { method: 'GET', target: '/all//x', host: 'a.test' },
  { method: 'GET', target: '/nothing', host: 'a.test' },
  { method: 'GET', target: '//x', host: 'd.test' },
  { method: 'CONNECT', target: '/users/1', host: 'a.test' },
];

/** Returns the status and the JSON `message` of a raw response. */
function parseResponse(response: string): { status: number; message: string } {
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1]);
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  let message = '';
  try {
    message = String((JSON.parse(body) as { message?: unknown }).message ?? '');
  } catch {
    // A response without a JSON body has no message to compare.
  }
  return { status, message };
}

describe('explain agrees with a running proxy', { timeout: 120_000 }, () => {
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;

  before(async () => {
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    proxy = await ws.proxy('proxy', [cp.address]);
    await applyConfigText(cp.address, [proxy], 'served.yaml', servedConfig);
  });

  after(async () => {
    await ws?.close();
  });

  for (const { method, target, host } of CASES) {
    test(`${method} ${target} as proxy responds`, async () => {
      const response = await sendRaw(
        proxy.port,
        `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      );
      const { status, message } = parseResponse(response);
      const explained = await loomctlAt(cp.address, ['explain', method, target, '--host', host]);
      const output = explained.stdout;

      assert.equal(explained.code, 0, explained.stderr);
      if (status === 400) {
        assert.match(output, /^bad request: .*proxies respond with 400 bad_request/m, output);
        assert.ok(output.includes(message), `${output} lacks the proxy's message ${message}`);
        assert.doesNotMatch(output, /^route \S+ \(upstream/m, output);
      } else if (status === 404) {
        assert.match(output, /^no route matches; proxies answer 404 /m, output);
      } else if (status === 405) {
        assert.match(output, /proxies answer 405 with Allow/, output);
      } else if (status === 501) {
        assert.match(output, /^not routed: .*proxies respond with 501 not_implemented/m, output);
        assert.ok(output.includes(message), `${output} lacks the proxy's message ${message}`);
      } else {
        // Route `root` has a closed port, so a forwarded request gets 502.
        assert.equal(status, 502, response);
        assert.match(output, /^route \S+ \(upstream root\) matches by path /m, output);
      }
    });
  }

  test('double slash without stripPrefix worded', async () => {
    const response = await sendRaw(
      proxy.port,
      'GET //x HTTP/1.1\r\nHost: d.test\r\nConnection: close\r\n\r\n',
    );
    const { status, message } = parseResponse(response);
    assert.equal(status, 400, response);
    assert.match(message, /^the path starts with "\/\/", and an upstream could read /);
    assert.doesNotMatch(message, /stripPrefix/);
  });
});
