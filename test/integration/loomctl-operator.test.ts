import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { programEntry, ROOT, waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';

/** Returns a config with one upstream `users` at `url` and one route `r` to it. */
function usersConfig(url: string, routeName = 'r'): string {
  return (
    `upstreams:\n  - name: users\n    targets:\n      - url: "${url}"\n` +
    `routes:\n  - {name: ${routeName}, paths: [/${routeName}], upstream: users}\n`
  );
}

/** Returns the version that `loomctl get` prints. */
async function storedVersion(controlPlane: string): Promise<number> {
  const result = await loomctl(controlPlane, ['get', '-o', 'json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { version: number }).version;
}

/** Starts loomctl with `args` against `controlPlane` and collects its output. */
function spawnLoomctl(controlPlane: string, args: string[]) {
  const child = spawn(
    process.execPath,
    [programEntry('loomctl'), '--control-plane', controlPlane, ...args],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { child, output, exited };
}

/** Starts `loomctl apply -f CONFIG --wait --timeout TIMEOUT` and collects its output. */
function spawnApplyWait(controlPlane: string, config: string, timeout: string) {
  return spawnLoomctl(controlPlane, ['apply', '-f', config, '--wait', '--timeout', timeout]);
}

describe('loomctl on an embedded store', { timeout: 120_000 }, () => {
  let fleet: Fleet;
  const file = (name: string, text: string) => {
    const path = join(fleet.dir, name);
    writeFileSync(path, text);
    return path;
  };

  before(async () => {
    fleet = await startFleet({ proxies: 1 });
  });
  after(async () => {
    await fleet?.stop();
  });

  // Runs first: `--if-version 0` needs a store without routes or upstreams.
  test('if-version 0 needs empty store', async () => {
    assert.equal(await storedVersion(fleet.controlPlane), 0);
    const first = file('first.yaml', usersConfig('http://127.0.0.1:9'));
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', first, '--if-version', '0']);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /route\/r created/);

    const second = file('second.yaml', usersConfig('http://127.0.0.1:9', 'r2'));
    const rejected = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      second,
      '--if-version',
      '0',
    ]);
    assert.equal(rejected.code, 1, rejected.stderr);
    assert.match(rejected.stderr, /--if-version 0 expects a store without routes or upstreams/);
    assert.match(rejected.stderr, /nothing was written/);
    const deleted = await loomctl(fleet.controlPlane, [
      'delete',
      'route',
      'r',
      '--if-version',
      '0',
    ]);
    assert.equal(deleted.code, 1, deleted.stderr);
    assert.match(deleted.stderr, /--if-version 0 expects a store without routes or upstreams/);
  });

  test('if-version rejects negative', async () => {
    const config = file('negative.yaml', usersConfig('http://127.0.0.1:9'));
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', config, '--if-version', '-1']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /or 0 to write only to a store without routes or upstreams/);
  });

  test('target URL spellings make no version', async () => {
    const spellings = [
      'http://LocalHost:17411',
      'http://localhost:17411',
      'http://localhost:17411/',
      'HTTP://localhost:17411',
    ];
    const first = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      file('spelling-0.yaml', usersConfig(spellings[0])),
    ]);
    assert.equal(first.code, 0, first.stderr);
    const version = await storedVersion(fleet.controlPlane);
    for (const [index, spelling] of spellings.entries()) {
      const config = file(`spelling-${index}.yaml`, usersConfig(spelling));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `no changes (version ${version})\n`, spelling);
    }
    const stored = await loomctl(fleet.controlPlane, ['get', 'upstreams', '-o', 'json']);
    assert.match(stored.stdout, /"url": "http:\/\/localhost:17411"/);

    const defaultPorts = ['http://localhost:80', 'http://localhost', 'http://LOCALHOST:80/'];
    const applied = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      file('port-0.yaml', usersConfig(defaultPorts[0])),
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    const portVersion = await storedVersion(fleet.controlPlane);
    for (const [index, spelling] of defaultPorts.entries()) {
      const config = file(`port-${index}.yaml`, usersConfig(spelling));
      const diff = await loomctl(fleet.controlPlane, ['diff', '-f', config]);
      assert.equal(diff.code, 0, `${spelling}: ${diff.stdout}`);
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
      assert.equal(result.stdout, `no changes (version ${portVersion})\n`, spelling);
    }
  });

  test('empty tls makes no version', async () => {
    const plain = usersConfig('http://127.0.0.1:17412', 'tls');
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file('tls-0.yaml', plain)]);
    assert.equal(applied.code, 0, applied.stderr);
    const version = await storedVersion(fleet.controlPlane);

    const spellings = [
      '    tls: {}\n',
      '    tls: {caFile: "", serverName: "", insecureSkipVerify: false}\n',
    ];
    for (const [index, tls] of spellings.entries()) {
      const config = file(`tls-${index + 1}.yaml`, plain.replace('routes:\n', `${tls}routes:\n`));
      const diff = await loomctl(fleet.controlPlane, ['diff', '-f', config]);
      assert.equal(diff.code, 0, `${tls}: ${diff.stdout}`);
      assert.doesNotMatch(diff.stdout, /tls/);
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `no changes (version ${version})\n`, tls);
    }
  });

  test('zero weights warn on validate', async () => {
    const config = file(
      'zero.yaml',
      'upstreams:\n  - name: zero\n    targets: [{url: "http://127.0.0.1:9", weight: 0}]\n' +
        'routes:\n  - {name: z, paths: [/z], upstream: zero}\n',
    );
    const result = await loomctl(fleet.controlPlane, ['validate', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stderr,
      /^warning: .*zero\.yaml:3: upstream "zero" targets: every target has weight 0.*route\(s\) "z"/m,
    );
  });

  test('explain shows normalised path', async () => {
    const config = file('explain.yaml', usersConfig('http://127.0.0.1:9', 'private'));
    const result = await loomctl(fleet.controlPlane, [
      'explain',
      'GET',
      '/info/../private',
      '-f',
      config,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^request path \/info\/\.\.\/private is normalised to \/private, as proxies do before routing\nroute private /,
    );
  });

  test('explain names escaped-slash rejection', async () => {
    const config = file('explain-escaped.yaml', usersConfig('http://127.0.0.1:9', 'private'));
    const result = await loomctl(fleet.controlPlane, ['explain', 'GET', '/a%2fb', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^request path \/a%2fb is normalised to \/a%2Fb, as proxies do before routing\n/,
    );
    assert.match(
      result.stdout,
      /^the path contains "%2F": proxies that run with --escaped-slashes reject respond with 400 escaped_slash instead of routing it$/m,
    );
  });

  test('explain missing file writes nothing', async () => {
    const missing = join(fleet.dir, 'missing.yaml');
    const result = await loomctl(fleet.controlPlane, ['explain', 'GET', '/a', '-f', missing]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: invalid configuration: checked offline, found 1 error:\n/);
    assert.doesNotMatch(result.stderr, /nothing was written/);
  });

  test('interrupted wait names committed version', async () => {
    const proxy = fleet.proxies[0].process.child;
    // A stopped proxy keeps its stream open but never acks, so the wait stays pending.
    proxy.kill('SIGSTOP');
    try {
      const config = file('interrupt.yaml', usersConfig('http://127.0.0.1:9', 'interrupt'));
      const run = spawnApplyWait(fleet.controlPlane, config, '60s');

      await waitFor('apply to print its version', 30_000, async () =>
        /^version \d+$/m.test(run.output.stdout),
      );
      // Polling is under way once the version is printed; give it one poll to start.
      await new Promise((resolve) => setTimeout(resolve, 300));
      run.child.kill('SIGINT');
      const code = await run.exited;

      const version = /^version (\d+)$/m.exec(run.output.stdout)?.[1];
      assert.equal(code, 130, run.output.stderr);
      assert.equal(
        run.output.stderr,
        `interrupted: version ${version} was committed; only the wait for proxies stopped. ` +
          'Run "loomctl status" to see which proxies applied it.\n',
      );
    } finally {
      proxy.kill('SIGCONT');
    }
  });

  test('explain rejects invalid URL', async () => {
    const result = await loomctl(fleet.controlPlane, ['explain', 'GET', 'not a url']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      result.stderr,
      /^error: invalid URL "not a url"; give a full URL such as http:\/\/api\.example\.com\/users\/1 or a path that starts with \/, such as \/users\/1$/m,
    );
    assert.match(result.stderr, /^Usage: loomctl explain /m);
    assert.equal(result.stdout, '');
  });

  test('explain rejects invalid Host', async () => {
    const cases = [
      {
        args: ['/a', '--host', 'svc.local:@evil.example'],
        message:
          'error: invalid Host "svc.local:@evil.example" (from --host): the port ' +
          '"@evil.example" is not a decimal number. ',
      },
      {
        args: ['/a', '--host', 'svc.local:80:80'],
        message:
          'error: invalid Host "svc.local:80:80" (from --host): the port "80:80" is not a ' +
          'decimal number; a Host value has at most one ":" outside brackets. ',
      },
      {
        args: ['http://svc.local:80:80/a'],
        message: 'error: invalid Host "svc.local:80:80" (from the URL): the port "80:80" ',
      },
    ];
    for (const { args, message } of cases) {
      const result = await loomctl(fleet.controlPlane, ['explain', 'GET', ...args]);
      assert.equal(result.code, 2, result.stderr);
      assert.ok(result.stderr.startsWith(message), result.stderr);
      assert.match(
        result.stderr,
        /Proxies respond to such a request with 400 bad_request; give a host/,
      );
      assert.match(result.stderr, /^Usage: loomctl explain /m);
      assert.equal(result.stdout, '');
    }

    const valid = await loomctl(fleet.controlPlane, [
      'explain',
      'GET',
      '/a',
      '--host',
      'A.test.:80',
    ]);
    assert.equal(valid.code, 0, valid.stderr);
  });

  test('dry run rejects wait', async () => {
    const before = await storedVersion(fleet.controlPlane);
    const config = file('dry-wait.yaml', usersConfig('http://127.0.0.1:9', 'drywait'));
    const result = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      config,
      '--dry-run',
      '--wait',
    ]);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      result.stderr,
      'error: --dry-run writes nothing, so --wait has no version to wait for; drop one of them\n',
    );
    assert.equal(result.stdout, '');
    assert.equal(await storedVersion(fleet.controlPlane), before);
  });

  test('delete conflict advises delete', async () => {
    const config = file('conflict.yaml', usersConfig('http://127.0.0.1:9', 'doomed'));
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
    assert.equal(applied.code, 0, applied.stderr);
    const expected = await storedVersion(fleet.controlPlane);
    const other = file('conflict-other.yaml', usersConfig('http://127.0.0.1:9', 'bystander'));
    const changed = await loomctl(fleet.controlPlane, ['apply', '-f', other]);
    assert.equal(changed.code, 0, changed.stderr);
    const current = await storedVersion(fleet.controlPlane);

    const result = await loomctl(fleet.controlPlane, [
      'delete',
      'route',
      'doomed',
      '--if-version',
      String(expected),
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr,
      `error: version conflict: expected the configuration at version ${expected}, but it ` +
        `changed since (the store is now at version ${current}); route/doomed was not deleted. ` +
        'Run "loomctl get" to check that route/doomed should still be deleted, then delete it ' +
        `again with --if-version ${current}.\n`,
    );
    const stored = await loomctl(fleet.controlPlane, ['get', 'routes', 'doomed']);
    assert.equal(stored.code, 0, stored.stderr);

    const again = await loomctl(fleet.controlPlane, [
      'delete',
      'route',
      'doomed',
      '--if-version',
      String(current),
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^route\/doomed deleted$/m);
  });
});

describe('loomctl wait with a lost proxy', { timeout: 120_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ proxies: 2 });
    await waitFor('both proxies to connect', 30_000, async () => {
      const { proxies } = await fleetStatus(fleet.controlPlane);
      return proxies.filter((proxy) => proxy.connected).length === 2;
    });
  });
  after(async () => {
    await fleet?.stop();
  });

  test('wait spans control plane restart', async () => {
    // Stopped proxies keep the version pending while the control plane restarts.
    for (const proxy of fleet.proxies) proxy.process.child.kill('SIGSTOP');
    const config = join(fleet.dir, 'restart.yaml');
    writeFileSync(config, usersConfig('http://127.0.0.1:9', 'restart'));
    const run = spawnApplyWait(fleet.controlPlane, config, '60s');
    try {
      await waitFor('apply to print its version', 30_000, () =>
        /^version \d+$/m.test(run.output.stdout),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      await fleet.stopControlPlane();
      await fleet.startControlPlane();
      // The wait reads the restarted control plane's status before any proxy is back.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    } finally {
      for (const proxy of fleet.proxies) proxy.process.child.kill('SIGCONT');
    }
    const code = await run.exited;

    const version = Number(/^version (\d+)$/m.exec(run.output.stdout)?.[1]);
    assert.equal(code, 0, `${run.output.stdout}\n${run.output.stderr}`);
    assert.match(
      run.output.stdout,
      new RegExp(`^version ${version} applied by 2 of 2 proxies(;|$)`, 'm'),
    );
  });

  test('status watch follows convergence', async () => {
    const watch = spawnLoomctl(fleet.controlPlane, ['status', '--watch', '--interval', '100ms']);
    try {
      await waitFor('the first status table', 30_000, () =>
        /connected proxies applied it/.test(watch.output.stdout),
      );
      const config = join(fleet.dir, 'watched.yaml');
      writeFileSync(config, usersConfig('http://127.0.0.1:9', 'watched'));
      const applied = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
      assert.equal(applied.code, 0, applied.stderr);
      const version = Number(/^version (\d+)$/m.exec(applied.stdout)?.[1]);
      const converged = new RegExp(`version ${version}: 2 of 2 connected proxies applied it`);
      await waitFor('the watch to show the new version applied', 30_000, () =>
        converged.test(watch.output.stdout),
      );

      await fleet.stopControlPlane();
      await waitFor('the watch to report the lost control plane', 30_000, () =>
        /cannot reach the control plane at .*; still watching/.test(watch.output.stderr),
      );
      await fleet.startControlPlane();
      await waitFor('the watch to report the control plane back', 30_000, () =>
        /control plane reachable again/.test(watch.output.stderr),
      );
    } finally {
      watch.child.kill('SIGINT');
    }
    assert.equal(await watch.exited, 0, watch.output.stderr);
    assert.equal(watch.output.stderr.match(/still watching/g)?.length, 1, watch.output.stderr);
  });

  test('status watch prints JSON lines', async () => {
    const watch = spawnLoomctl(fleet.controlPlane, [
      'status',
      '-w',
      '-o',
      'json',
      '--interval',
      '100ms',
    ]);
    try {
      await waitFor('a JSON status line', 30_000, () => watch.output.stdout.includes('\n'));
    } finally {
      watch.child.kill('SIGINT');
    }
    assert.equal(await watch.exited, 0, watch.output.stderr);
    const lines = watch.output.stdout.trimEnd().split('\n');
    for (const line of lines) {
      const status = JSON.parse(line) as { version: number; proxies: unknown[] };
      assert.equal(typeof status.version, 'number');
      assert.ok(Array.isArray(status.proxies));
    }
  });

  test('status interval needs watch', async () => {
    const result = await loomctl(fleet.controlPlane, ['status', '--interval', '1s']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--interval sets how often --watch reads the status/);
    const short = await loomctl(fleet.controlPlane, ['status', '-w', '--interval', '10ms']);
    assert.equal(short.code, 2);
    assert.match(
      short.stderr,
      /argument '10ms' is invalid\. The interval must be at least 100ms, .* Use 100ms or more/,
    );
  });

  test('wait reports disconnected proxy', async () => {
    const lost = fleet.proxies[1];
    // A stopped proxy keeps its stream open but never acks, so the wait counts it as pending.
    lost.process.child.kill('SIGSTOP');
    const config = join(fleet.dir, 'lost.yaml');
    writeFileSync(config, usersConfig('http://127.0.0.1:9', 'lost'));
    const run = spawnApplyWait(fleet.controlPlane, config, '25s');

    await waitFor('apply to print its version', 30_000, () =>
      /^version \d+$/m.test(run.output.stdout),
    );
    // The wait reads the status every 50 ms; this leaves it time to see the stopped proxy.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await lost.process.kill();
    const code = await run.exited;

    const version = Number(/^version (\d+)$/m.exec(run.output.stdout)?.[1]);
    assert.equal(code, 4, `${run.output.stdout}\n${run.output.stderr}`);
    assert.match(
      run.output.stdout,
      new RegExp(
        `^version ${version} applied by 1 of 1 connected proxies; convergence p50 \\d+ ms, ` +
          `p99 \\d+ ms; 1 proxy disconnected before applying it: ${lost.id}$`,
        'm',
      ),
    );
    assert.match(
      run.output.stderr,
      new RegExp(
        `^proxy ${lost.id} disconnected before applying version ${version}; ` +
          'it last served version \\d+$',
        'm',
      ),
    );
    assert.match(
      run.output.stderr,
      new RegExp(
        `^error: version ${version} was committed and every connected proxy applied it, but ` +
          '1 proxy disconnected before applying it; run "loomctl status"',
        'm',
      ),
    );

    const status = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
    const proxies = (
      JSON.parse(status.stdout) as {
        proxies: { id: string; connected: boolean; ackedVersion: number }[];
      }
    ).proxies;
    const dead = proxies.find((proxy) => proxy.id === lost.id);
    assert.equal(dead?.connected, false);
    assert.ok(dead.ackedVersion < version, `${lost.id} acked ${dead.ackedVersion}`);
  });
});

describe('loomctl with unreadable etcd keys', { timeout: 120_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  let config: string;
  const put = (key: string, value: string) =>
    runEtcdctl([`--endpoints=${etcd.endpoint}`, 'put', key, value]);

  before(async () => {
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 0 });
    config = join(fleet.dir, 'users.yaml');
    writeFileSync(config, usersConfig('http://127.0.0.1:9'));
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', config]);
    assert.equal(applied.code, 0, applied.stderr);
  });
  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
  });

  test('get warns about unreadable key', async () => {
    await put('/loom/routes/badjson', '{not json');
    const result = await loomctl(fleet.controlPlane, ['get', 'routes']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stderr,
      /^warning: stored key "\/loom\/routes\/badjson" is not a valid route \(.*JSON.*\), so proxies skip it; .* loomctl delete route badjson$/m,
    );
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.doesNotMatch(result.stdout, /badjson/);
  });

  test('delete removes unreadable key', async () => {
    await put('/loom/routes/badjson', '{not json');
    const result = await loomctl(fleet.controlPlane, ['delete', 'route', 'badjson']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^route\/badjson deleted \(its stored value was not a valid route\)$/m,
    );
    const after = await loomctl(fleet.controlPlane, ['get']);
    assert.equal(after.stderr, '');
    const again = await loomctl(fleet.controlPlane, ['delete', 'route', 'badjson']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /route "badjson" not found/);
  });

  test('prune removes unreadable keys', async () => {
    await put('/loom/routes/badjson', '{not json');
    await put('/loom/upstreams/badup', '{"name": 1}');
    const diff = await loomctl(fleet.controlPlane, ['diff', '--prune', '-f', config]);
    assert.equal(diff.code, 2, diff.stderr);
    assert.match(diff.stdout, /^- route\/badjson\n {4}\(stored value is not a valid route: /m);

    const result = await loomctl(fleet.controlPlane, ['apply', '--prune', '-f', config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^route\/badjson deleted \(its stored value was not a valid route\)$/m,
    );
    assert.match(
      result.stdout,
      /^upstream\/badup deleted \(its stored value was not a valid upstream\)$/m,
    );
    const after = await loomctl(fleet.controlPlane, ['get']);
    assert.equal(after.stderr, '');
    assert.match(after.stdout, /name: r\n/);
  });
});
