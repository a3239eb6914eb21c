import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startControlPlaneProcess } from '../helpers/fleet.js';
import { findFreePort } from '../helpers/ports.js';

const QUICKSTART = `
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:9
routes:
  - name: get-user
    paths: [/users/:id]
    methods: [GET]
    upstream: users
  - name: echo
    hosts: [localhost, 127.0.0.1]
    paths: [/echo/*rest]
    upstream: users
`;

function manyBadRoutes(count: number): string {
  const routes = Array.from(
    { length: count },
    (_, index) => `  - name: r${index}\n    paths: [/r${index}]\n    upstream: missing\n`,
  );
  return `routes:\n${routes.join('')}`;
}

describe('loomctl against a control plane', { timeout: 240_000 }, () => {
  let dir: string;
  let controlPlane: string;
  let cp: LoomProcess;
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-cli-loomctl-'));
    const port = await findFreePort();
    controlPlane = `127.0.0.1:${port}`;
    cp = startControlPlaneProcess(dir, { listen: controlPlane });
    await waitForPort('127.0.0.1', port);
  });
  after(async () => {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('usage errors exit 2', async () => {
    const config = file('usage.yaml', QUICKSTART);
    const cases = [
      ['apply', '-f', config, '--allow-empty'],
      ['apply', '-f', config, '--wait', '--timeout', 'abc'],
      ['apply', '-f', config, '--if-version', '-1'],
      ['apply', '-f', config, '--if-version', 'abc'],
      ['delete', 'route', 'x', '--if-version', '1.5'],
      ['apply', '-f', config, '--timeout', '5s'],
    ];
    for (const args of cases) {
      const result = await loomctl(controlPlane, args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    }
  });

  test('blank name is a usage error', async () => {
    const cases = [
      ['get', 'route', ''],
      ['get', 'upstream', ''],
      ['get', 'routes', '  '],
      ['delete', 'route', ''],
      ['delete', 'upstream', ' \t'],
    ];
    for (const args of cases) {
      const label = args.map((arg) => JSON.stringify(arg)).join(' ');
      const result = await loomctl(controlPlane, args);
      assert.equal(result.code, 2, `${label}: ${result.stderr}`);
      assert.match(
        result.stderr,
        /^error: command-argument value '\s*' is invalid for argument 'name'\. A route or upstream name must not be empty or blank\. Pass the name of a stored resource/m,
        label,
      );
      assert.doesNotMatch(result.stderr, /^error: .*not found/m, label);
      assert.equal(result.stdout, '', label);
    }
  });

  test('invalid name gets the naming rule', async () => {
    for (const args of [
      ['get', 'route', 'a b'],
      ['delete', 'upstream', 'a/b'],
    ]) {
      const label = args.join(' ');
      const result = await loomctl(controlPlane, args);
      assert.equal(result.code, 1, `${label}: ${result.stderr}`);
      assert.match(
        result.stderr,
        / not found \(a (route|upstream) name must be 1-128 letters/,
        label,
      );
    }
  });

  test('allow-empty without prune rejected', async () => {
    const empty = file('allow-empty.yaml', 'routes: []\nupstreams: []\n');
    const result = await loomctl(controlPlane, ['apply', '--allow-empty', '-f', empty]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --allow-empty .*; add --prune or drop it$/m);
    assert.equal(result.stdout, '');
  });

  test('timeout accepts hours', async () => {
    const config = file('timeout.yaml', QUICKSTART);
    for (const timeout of ['1h', '100000s']) {
      const result = await loomctl(controlPlane, [
        'apply',
        '-f',
        config,
        '--wait',
        '--timeout',
        timeout,
      ]);
      assert.equal(result.code, 0, `--timeout ${timeout}: ${result.stderr}`);
    }
  });

  test('prune of everything needs flag', async () => {
    const config = file('prune-full.yaml', QUICKSTART);
    const empty = file('prune-empty.yaml', 'routes: []\nupstreams: []\n');
    assert.equal((await loomctl(controlPlane, ['apply', '-f', config])).code, 0);

    const refused = await loomctl(controlPlane, ['apply', '--prune', '-f', empty]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /would delete all 3 stored resources \(2 routes, 1 upstream\)/);
    assert.match(refused.stderr, /--allow-empty/);
    const piped = await loomctl(controlPlane, ['apply', '--prune', '-f', '-'], 'routes: []\n');
    assert.equal(piped.code, 1, piped.stderr);
    assert.match(piped.stderr, /^error: \(stdin\) declares no routes or upstreams, so --prune/m);
    const stored = await loomctl(controlPlane, ['get', 'routes', '-o', 'json']);
    assert.match(stored.stdout, /get-user/);

    const allowed = await loomctl(controlPlane, ['apply', '--prune', '--allow-empty', '-f', empty]);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stdout, /route\/get-user deleted/);
    assert.equal((await loomctl(controlPlane, ['apply', '-f', config])).code, 0);
  });

  test('delete accepts plural kind', async () => {
    const config = file(
      'plural.yaml',
      'routes:\n  - name: doomed\n    paths: [/doomed]\n    upstream: users\n',
    );
    const applied = await loomctl(controlPlane, ['apply', '-f', config]);
    assert.equal(applied.code, 0, applied.stderr);
    const result = await loomctl(controlPlane, ['delete', 'routes', 'doomed']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /route\/doomed deleted/);
  });

  test('delete log keeps logger name', async () => {
    const config = file(
      'logged.yaml',
      'routes:\n  - name: logged\n    paths: [/logged]\n    upstream: users\n',
    );
    const applied = await loomctl(controlPlane, ['apply', '-f', config]);
    assert.equal(applied.code, 0, applied.stderr);
    const deleted = await loomctl(controlPlane, ['delete', 'route', 'logged']);
    assert.equal(deleted.code, 0, deleted.stderr);
    const lines = readFileSync(join(dir, 'control-plane.log'), 'utf8')
      .split('\n')
      .filter((line) => line.includes('"msg":"delete committed"'));
    const line = lines.find((text) => text.includes('"logged"'));
    assert.ok(line, lines.join('\n'));
    // JSON.parse keeps the last of two equal keys, so count them in the raw text.
    assert.equal(line.match(/"name":/g)?.length, 1, line);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.equal(parsed.name, 'control-plane');
    assert.equal(parsed.resourceName, 'logged');
    assert.equal(parsed.kind, 'route');
  });

  test('thousand errors stay bounded', async () => {
    const config = file('bad.yaml', manyBadRoutes(1_000));
    const result = await loomctl(controlPlane, ['apply', '-f', config]);
    assert.equal(result.code, 1, result.stderr);
    assert.doesNotMatch(result.stderr, /cannot reach|Deadline/);
    assert.match(result.stderr, /invalid configuration, nothing was written/);
    assert.match(result.stderr, /route "r0" upstream: unknown upstream/);
    const more = /(\d+) more errors not shown; the control plane sends the first (\d+)/.exec(
      result.stderr,
    );
    assert.ok(more, result.stderr.slice(-500));
    assert.equal(Number(more[1]) + Number(more[2]), 1_000);
    assert.ok(Number(more[2]) <= 100, `sent ${more[2]} issues`);
  });

  test('repeated warnings are summarised', async () => {
    const unknownMethods = Array.from(
      { length: 12 },
      (_, index) =>
        `  - {name: m${index}, paths: [/m${index}], methods: [GETT], upstream: missing}\n`,
    );
    const config = file('warnings.yaml', manyBadRoutes(1_000) + unknownMethods.join(''));
    const result = await loomctl(controlPlane, ['validate', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /1012 routes, 0 upstreams, 1024 warnings/);

    const lines = result.stderr.trimEnd().split('\n');
    const undeclared = lines.filter((line) => / upstream: upstream is not declared/.test(line));
    assert.equal(undeclared.length, 10);
    assert.match(undeclared[0], /route "r0" upstream:/);
    const methods = lines.filter((line) => / methods\[0\]: the proxy rejects/.test(line));
    assert.equal(methods.length, 10);
    const summaries = lines.slice(-2).sort();
    assert.equal(
      summaries[0],
      'warning: ... and 1002 more routes whose upstream is not declared in these files',
    );
    assert.equal(
      summaries[1],
      'warning: ... and 2 more route methods that the proxy rejects before routing',
    );
    assert.equal(lines.length, 22);
  });

  test('explain lists host near misses', async () => {
    const config = file('explain.yaml', QUICKSTART);
    assert.equal((await loomctl(controlPlane, ['apply', '-f', config])).code, 0);
    const result = await loomctl(controlPlane, ['explain', 'GET', '/echo/x']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /no route matches/);
    assert.match(
      result.stdout,
      /route echo path \/echo\/\*rest with Host 127\.0\.0\.1 or localhost/,
    );
  });

  test('explain takes URL after file', async () => {
    const config = file('explain-file.yaml', QUICKSTART);
    const result = await loomctl(controlPlane, ['explain', 'GET', '-f', config, '/users/1']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /route get-user \(upstream users\) matches by path \/users\/:id/);
  });

  test('unreachable error has no dangling note', async () => {
    const port = await findFreePort();
    const result = await loomctl(`127.0.0.1:${port}`, ['status']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /cannot reach the control plane/);
    assert.doesNotMatch(result.stderr, /Resolution note/);
  });

  test('etcd error has no dangling note', async () => {
    const etcdPort = await findFreePort();
    const port = await findFreePort();
    const address = `127.0.0.1:${port}`;
    const etcdPlane = startControlPlaneProcess(dir, {
      name: 'control-plane-etcd',
      listen: address,
      storeArgs: ['--etcd', `http://127.0.0.1:${etcdPort}`],
    });
    try {
      await waitForPort('127.0.0.1', port);
      const result = await loomctl(address, ['get']);
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(`etcd at http://127\\.0\\.0\\.1:${etcdPort} is unreachable`),
      );
      assert.match(result.stderr, /last error: connect ECONNREFUSED/);
      assert.doesNotMatch(result.stderr, /Resolution note/);
    } finally {
      await etcdPlane.stop();
    }
  });

  test('status without proxies says so', async () => {
    const result = await loomctl(controlPlane, ['status']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^control plane version \d+ \(epoch [^)]+\)\n$/);
    assert.match(result.stderr, /^no proxies: none is connected or was seen recently; start one /);
  });

  test('config tls file named', async () => {
    const missing = join(dir, 'missing-ca.pem');
    const config = file('loomctl.yaml', `tls:\n  ca: ${missing}\n`);
    const result = await loomctl(controlPlane, ['--config', config, 'status']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /tls\.ca file/);
    assert.ok(result.stderr.includes(config), result.stderr);
    assert.doesNotMatch(result.stderr, /--tls-ca file/);
  });

  test('long error keeps its fix', async () => {
    const name = `stored-${'z'.repeat(110)}`;
    const path = `/cut/${'a'.repeat(270)}/:id`;
    const stored = file(
      'cut-stored.yaml',
      'upstreams:\n  - {name: cut, targets: [{url: "http://127.0.0.1:9"}]}\n' +
        `routes:\n  - {name: cut-first, paths: [/cut/first], upstream: cut}\n` +
        `  - {name: ${name}, paths: ["${path}"], upstream: cut}\n`,
    );
    const applied = await loomctl(controlPlane, ['apply', '-f', stored]);
    assert.equal(applied.code, 0, applied.stderr);

    const conflicting = file(
      'cut-conflict.yaml',
      `routes:\n  - {name: cut-first, paths: ["${path.replace(':id', ':other')}"], upstream: cut}\n`,
    );
    const result = await loomctl(controlPlane, ['apply', '-f', conflicting]);
    assert.equal(result.code, 1, result.stderr);
    const issue = result.stderr.split('\n').find((line) => line.startsWith(`  route "${name}"`));
    assert.ok(issue, result.stderr);
    assert.ok(issue.length > 1_000, `${issue.length} characters`);
    assert.ok(
      issue.startsWith(
        `  route "${name}" paths[0]: this route is stored but not in the applied files: path "${path}"`,
      ),
      issue,
    );
    assert.match(issue, / \.\.\. /);
    assert.ok(
      issue.endsWith(
        `To fix it, run "loomctl delete route ${name}", or include a fixed route "${name}" ` +
          `in the files (got "${path}")`,
      ),
      issue,
    );
  });

  test('version flag prints version', async () => {
    const result = await loomctl(controlPlane, ['--version']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^\d+\.\d+\.\d+\n$/);
  });
});
