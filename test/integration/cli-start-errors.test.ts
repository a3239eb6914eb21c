import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loom as runLoom, type CliResult } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

/** Runs `loom ARGS` to its exit; a server that keeps running past 60,000 ms is killed (code -1). */
function loom(args: string[]): Promise<CliResult> {
  return runLoom(args, 60_000);
}

function holdPort(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function isFree(port: number): Promise<boolean> {
  const server = await holdPort(port).catch(() => undefined);
  if (server === undefined) return false;
  await new Promise((resolve) => server.close(resolve));
  return true;
}

function assertNoStack(result: CliResult): void {
  assert.doesNotMatch(result.stderr, /^\s+at /m, `stack trace printed:\n${result.stderr}`);
}

describe('loom start errors', { timeout: 240_000 }, () => {
  let dir: string;
  let busyPort: number;
  let busy: Server;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-cli-start-'));
    busyPort = await findFreePort();
    busy = await holdPort(busyPort);
  });
  after(async () => {
    await new Promise((resolve) => busy.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  test('data plane busy admin port', async () => {
    const trafficPort = await findFreePort();
    const result = await loom([
      'data-plane',
      '--control-plane',
      '127.0.0.1:7400',
      '--listen',
      `127.0.0.1:${trafficPort}`,
      '--admin-listen',
      `127.0.0.1:${busyPort}`,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `error: cannot listen on 127\\.0\\.0\\.1:${busyPort} \\(--admin-listen\\): address already in use`,
      ),
    );
    assertNoStack(result);
    assert.ok(await isFree(trafficPort), 'the traffic port stayed open after the failed start');
  });

  test('control plane busy ports', async () => {
    const free = await findFreePort();
    const cases = [
      { flag: '--admin-listen', args: ['--listen', `127.0.0.1:${free}`] },
      { flag: '--listen', args: ['--admin-listen', `127.0.0.1:${free}`] },
    ];
    for (const { flag, args } of cases) {
      const result = await loom([
        'control-plane',
        ...args,
        flag,
        `127.0.0.1:${busyPort}`,
        '--data-dir',
        join(dir, `store-${flag}`),
      ]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${busyPort} \\(${flag}\\): address already`),
      );
      // grpc-js logs its own line for a failed bind; Loom's message replaces it.
      assert.doesNotMatch(result.stderr, /No address added/);
      assertNoStack(result);
    }
  });

  test('same port under another name', async () => {
    const port = await findFreePort();
    const result = await loom([
      'control-plane',
      '--listen',
      `localhost:${port}`,
      '--admin-listen',
      `127.0.0.1:${port}`,
      '--data-dir',
      join(dir, 'store-localhost'),
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `error: cannot listen on 127\\.0\\.0\\.1:${port} \\(--admin-listen\\): address already in ` +
          `use; --listen "localhost:${port}" of this process binds port ${port} too, perhaps on ` +
          'the same address; give each listener its own port',
      ),
    );
    assertNoStack(result);
  });

  test('invalid addresses rejected up front', async () => {
    const cases: { args: string[]; value: string; ports?: string }[] = [
      ...['7402', ':7402', '127.0.0.1:99999', 'localhost:abc'].map((value) => ({
        args: ['control-plane', '--listen', value, '--data-dir', join(dir, 'store-invalid')],
        value,
        // A listener may take port 0 for a free port; an address to dial may not.
        ports: 'from 0 to 65535',
      })),
      {
        args: ['data-plane', '--control-plane', 'http://127.0.0.1:7400'],
        value: 'http://127.0.0.1:7400',
      },
      {
        args: ['data-plane', '--control-plane', '7400'],
        value: '7400',
        ports: 'from 1 to 65535',
      },
    ];
    for (const { args, value, ports } of cases) {
      const result = await loom(args);
      assert.equal(result.code, 2, `${value}: ${result.stderr}`);
      assert.ok(result.stderr.includes(`"${value}"`), `${value} not named: ${result.stderr}`);
      assert.match(result.stderr, /expected HOST:PORT such as 127\.0\.0\.1:7400/);
      if (ports !== undefined)
        assert.ok(result.stderr.includes(`with a port ${ports}`), result.stderr);
      assert.doesNotMatch(result.stderr, /0\.0\.28\.234/);
      assertNoStack(result);
    }
  });

  test('missing tokens file named', async () => {
    const missing = join(dir, 'no-such-tokens');
    const result = await loom([
      'control-plane',
      '--listen',
      '127.0.0.1:0',
      '--admin-listen',
      '127.0.0.1:0',
      '--data-dir',
      join(dir, 'store-tokens'),
      '--admin-tokens-file',
      missing,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.ok(result.stderr.includes(`--admin-tokens-file "${missing}"`), result.stderr);
    assertNoStack(result);
  });

  test('proxy TLS file missing', async () => {
    const missing = join(dir, 'no-such-ca.pem');
    const trafficPort = await findFreePort();
    const adminPort = await findFreePort();
    const result = await loom([
      'data-plane',
      '--control-plane',
      '127.0.0.1:7400',
      '--listen',
      `127.0.0.1:${trafficPort}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--tls-ca',
      missing,
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.ok(
      result.stderr.includes(`error: cannot read --tls-ca file ${missing}: file not found`),
      result.stderr,
    );
    assertNoStack(result);
    assert.ok(await isFree(trafficPort), 'the traffic port stayed open after the failed start');
    assert.ok(await isFree(adminPort), 'the admin port stayed open after the failed start');
  });

  test('usage errors exit 2', async () => {
    const store = ['--data-dir', join(dir, 'store-usage')];
    const cases: { args: string[]; message: RegExp }[] = [
      { args: ['control-plane', '--no-such-flag'], message: /unknown option '--no-such-flag'/ },
      { args: ['data-plane'], message: /required option '--control-plane/ },
      {
        args: ['control-plane', ...store, '--log-level', 'loud'],
        message: /invalid --log-level "loud"/,
      },
      {
        args: ['control-plane', ...store, '--etcd-watch-check-interval', 'soon'],
        message: /--etcd-watch-check-interval/,
      },
      { args: ['control-plane', ...store, '--tls-cert', 'cert.pem'], message: /--tls-key/ },
      {
        args: ['data-plane', '--control-plane', '127.0.0.1:7400', '--workers', 'many'],
        message: /--workers/,
      },
      {
        args: ['data-plane', '--control-plane', '127.0.0.1:7400', '--drain-timeout', 'x'],
        message: /--drain-timeout/,
      },
      {
        args: ['data-plane', '--control-plane', '127.0.0.1:7400', '--tls-cert', 'cert.pem'],
        message: /needs both --tls-cert and --tls-key/,
      },
      {
        args: ['data-plane', '--control-plane', '127.0.0.1:7400', '--tls-key', 'key.pem'],
        message: /needs both --tls-cert and --tls-key/,
      },
    ];
    for (const { args, message } of cases) {
      const result = await loom(args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
      assertNoStack(result);
    }
  });

  test('data dir that is a file', async () => {
    const file = join(dir, 'not-a-directory');
    writeFileSync(file, '');
    for (const dataDir of [file, join(file, 'store')]) {
      const result = await loom([
        'control-plane',
        '--listen',
        '127.0.0.1:0',
        '--admin-listen',
        '127.0.0.1:0',
        '--data-dir',
        dataDir,
      ]);
      assert.equal(result.code, 1, result.stderr);
      assert.ok(
        result.stderr.includes(`error: cannot create data directory ${dataDir}: `),
        result.stderr,
      );
      assert.match(
        result.stderr,
        /move the file away, or choose another directory with --data-dir/,
      );
      assert.doesNotMatch(result.stderr, /EEXIST|ENOTDIR/);
      assertNoStack(result);
    }
  });

  test('version flag prints version', async () => {
    const result = await loom(['--version']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^\d+\.\d+\.\d+\n$/);
  });
});
