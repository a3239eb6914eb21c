import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';

import { ROOT, waitForPort } from '../../scripts/processes.js';
import { loom, loomctl, type CliResult } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

const QUICKSTART = join(ROOT, 'examples', 'quickstart.yaml');

/** A control plane started through a wrapper command, such as unshare or a shell. */
interface WrappedControlPlane {
  child: ChildProcess;
  exited: Promise<number | null>;
  address: string;
  log: string;
}

/**
 * Starts `loom control-plane` on the embedded store in `dataDir` as the last arguments of
 * `command`, with free ports on 127.0.0.1, and waits until its gRPC port accepts connections.
 */
async function startWrapped(
  command: string,
  prefix: string[],
  dataDir: string,
  log: string,
): Promise<WrappedControlPlane> {
  const port = await findFreePort();
  const adminPort = await findFreePort();
  const address = `127.0.0.1:${port}`;
  const logFd = openSync(log, 'a');
  const child = spawn(
    command,
    [
      ...prefix,
      process.execPath,
      join(ROOT, 'bin', 'loom.js'),
      'control-plane',
      '--listen',
      address,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--data-dir',
      dataDir,
    ],
    { cwd: ROOT, stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal === null ? code : null));
  });
  await waitForPort('127.0.0.1', port, 30_000);
  return { child, exited, address, log };
}

/** Runs `loom control-plane` on `dataDir` until it exits, as for a start that must fail. */
async function startToExit(dataDir: string): Promise<CliResult> {
  const port = await findFreePort();
  const args = ['control-plane', '--listen', `127.0.0.1:${port}`, '--admin-listen', '127.0.0.1:0'];
  return loom([...args, '--data-dir', dataDir], 60_000);
}

function assertNoStack(result: CliResult): void {
  assert.doesNotMatch(result.stderr, /^\s+at /m, `stack trace printed:\n${result.stderr}`);
}

/** Returns a config of `count` routes on one upstream, for an apply of a known size. */
function manyRoutes(count: number): string {
  const lines = [
    'apiVersion: loom/v1',
    'upstreams:',
    '  - name: many',
    '    targets:',
    '      - url: http://127.0.0.1:9',
    'routes:',
  ];
  for (let index = 0; index < count; index++) {
    lines.push(`  - name: r${index}`, `    paths: [/many/r${index}/:id]`, '    upstream: many');
  }
  return `${lines.join('\n')}\n`;
}

/** Returns whether `command ARGS` runs and exits 0, for tests that need a system tool. */
function works(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

describe('embedded store faults', { timeout: 240_000 }, () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-store-faults-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('restart with the pid of a killed control plane', async (t) => {
    // A control plane that runs as pid 1 of a container gets pid 1 again when it is restarted.
    const namespace = ['--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL'];
    if (!works('unshare', [...namespace, 'true'])) {
      t.skip('unshare cannot create a pid namespace here');
      return;
    }
    const dataDir = join(dir, 'pid-reuse');
    const log = join(dir, 'pid-reuse.log');

    const first = await startWrapped('unshare', namespace, dataDir, log);
    t.after(() => first.child.kill('SIGKILL'));
    const applied = await loomctl(first.address, ['apply', '-f', QUICKSTART]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(readFileSync(join(dataDir, 'LOCK'), 'utf8'), /^1( \d+)?\n$/);
    // SIGKILL to unshare reaches the control plane through --kill-child, as kill -9 would.
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await startWrapped('unshare', namespace, dataDir, log);
    t.after(() => second.child.kill('SIGKILL'));
    const routes = await loomctl(second.address, ['get', 'routes', '-o', 'json']);

    assert.equal(routes.code, 0, routes.stderr);
    assert.deepEqual(
      (JSON.parse(routes.stdout) as { routes: { name: string }[] }).routes.map(
        (route) => route.name,
      ),
      ['echo', 'get-user'],
    );
    assert.match(readFileSync(log, 'utf8'), /stale data directory lock taken over/);
  });

  test('empty data directory flag', async () => {
    for (const value of ['', ' ']) {
      const result = await startToExit(value);

      assert.equal(result.code, 2, result.stderr);
      assert.ok(
        result.stderr.includes(
          `error: invalid --data-dir ${JSON.stringify(value)}: the path is empty or only white ` +
            'space; name the directory of the store, such as --data-dir ./loom-data',
        ),
        result.stderr,
      );
    }
  });

  test('store file that is a directory', async () => {
    const dataDir = join(dir, 'directory-identity');
    mkdirSync(join(dataDir, 'identity.json'), { recursive: true });

    const result = await startToExit(dataDir);

    assert.equal(result.code, 1, result.stderr);
    assertNoStack(result);
    assert.ok(
      result.stderr.includes(
        `error: cannot open the embedded store in ${dataDir}: read ${join(dataDir, 'identity.json')} ` +
          'failed with EISDIR: a directory is at the path of a store file; move it away',
      ),
      result.stderr,
    );
  });

  test('immutable data directory', async (t) => {
    const dataDir = join(dir, 'immutable');
    mkdirSync(dataDir);
    if (!works('chattr', ['+i', dataDir])) {
      t.skip('chattr +i does not work on this file system or for this user');
      return;
    }
    t.after(() => works('chattr', ['-i', dataDir]));

    const result = await startToExit(dataDir);

    assert.equal(result.code, 1, result.stderr);
    assertNoStack(result);
    assert.ok(
      result.stderr.includes(`error: cannot open the embedded store in ${dataDir}: open `),
      result.stderr,
    );
    assert.match(result.stderr, /failed with EPERM: .*remove an immutable attribute/);
  });

  test('file size limit during an apply', async (t) => {
    const dataDir = join(dir, 'size-limit');
    const log = join(dir, 'size-limit.log');
    const big = join(dir, 'many.yaml');
    writeFileSync(big, manyRoutes(2_000));
    // 64 blocks of 1,024 bytes: the quick start's log line fits, the 2,000 routes do not.
    const limited = await startWrapped(
      'bash',
      ['-c', 'ulimit -f 64 && exec "$@"', 'bash'],
      dataDir,
      log,
    );
    t.after(() => limited.child.kill('SIGKILL'));

    const tooBig = await loomctl(limited.address, ['apply', '-f', big]);
    const small = await loomctl(limited.address, ['apply', '-f', QUICKSTART]);

    assert.equal(tooBig.code, 1, tooBig.stderr);
    assert.ok(
      tooBig.stderr.includes(
        `writing revision 1 failed: write ${join(dataDir, 'log.jsonl')} failed with EFBIG: the ` +
          'file size limit of the process (ulimit -f) was reached; raise or remove it; nothing ' +
          'was written; fix the cause and apply again',
      ),
      tooBig.stderr,
    );
    assert.equal(small.code, 0, small.stderr);
    assert.match(small.stdout, /^version 1$/m);

    limited.child.kill('SIGTERM');
    assert.equal(await limited.exited, 0);
    const restarted = await startWrapped('bash', ['-c', 'exec "$@"', 'bash'], dataDir, log);
    t.after(() => restarted.child.kill('SIGKILL'));
    const stored = await loomctl(restarted.address, ['get', '-o', 'json']);

    assert.equal(stored.code, 0, stored.stderr);
    const config = JSON.parse(stored.stdout) as { version: number; routes: { name: string }[] };
    assert.equal(config.version, 1);
    assert.deepEqual(
      config.routes.map((route) => route.name),
      ['echo', 'get-user'],
    );
  });

  /** Applies the quick start to a control plane on `dataDir`, then stops it with SIGTERM. */
  async function storeQuickstart(t: TestContext, dataDir: string): Promise<void> {
    const log = `${dataDir}.log`;
    const first = await startWrapped('bash', ['-c', 'exec "$@"', 'bash'], dataDir, log);
    t.after(() => first.child.kill('SIGKILL'));
    const applied = await loomctl(first.address, ['apply', '-f', QUICKSTART]);
    assert.equal(applied.code, 0, applied.stderr);
    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0);
  }

  test('damaged last commit stops the start', async (t) => {
    const dataDir = join(dir, 'damaged-last');
    await storeQuickstart(t, dataDir);
    const logFile = join(dataDir, 'log.jsonl');
    const damaged = readFileSync(logFile, 'utf8').replace('get-user', 'get-usex');
    writeFileSync(logFile, damaged);

    const result = await startToExit(dataDir);

    assert.equal(result.code, 1, result.stderr);
    assertNoStack(result);
    assert.ok(
      result.stderr.includes(
        `error: ${logFile} line 1 is corrupt: checksum or format mismatch; move ${dataDir} aside`,
      ),
      result.stderr,
    );
    assert.equal(readFileSync(logFile, 'utf8'), damaged);
    assert.equal(existsSync(join(dataDir, 'LOCK')), false);
  });

  test('deleted log stops the start', async (t) => {
    const dataDir = join(dir, 'deleted-log');
    await storeQuickstart(t, dataDir);
    const logFile = join(dataDir, 'log.jsonl');
    rmSync(logFile);

    const result = await startToExit(dataDir);

    assert.equal(result.code, 1, result.stderr);
    assertNoStack(result);
    assert.ok(
      result.stderr.includes(
        `error: ${logFile} is missing but ${join(dataDir, 'identity.json')} exists, so the ` +
          'commits in the log are lost; restore the file, or move',
      ),
      result.stderr,
    );
    assert.equal(existsSync(logFile), false);
  });
});
