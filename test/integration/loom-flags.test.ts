import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { programEntry, ROOT } from '../../scripts/processes.js';
import { loom as runLoom, type CliResult } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

/** Runs `loom ARGS` to its exit; a server that keeps running past 30,000 ms is killed (code -1). */
function loom(args: string[]): Promise<CliResult> {
  return runLoom(args, 30_000);
}

/**
 * Starts `loom ARGS`, waits up to 20 s for a log line with `"msg":"MESSAGE"` on stderr, where
 * Loom logs, then sends SIGTERM to the child's PID and returns its exit code and output.
 */
async function startThenStop(args: string[], message: string): Promise<CliResult> {
  const child = spawn(process.execPath, [programEntry('loom'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal === null ? (code ?? -1) : -1));
  });

  const marker = `"msg":${JSON.stringify(message)}`;
  const deadline = Date.now() + 20_000;
  while (!stderr.includes(marker) && child.exitCode === null && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const started = stderr.includes(marker);
  if (child.exitCode === null) process.kill(child.pid!, started ? 'SIGTERM' : 'SIGKILL');
  const killTimer = setTimeout(() => child.exitCode === null && child.kill('SIGKILL'), 10_000);
  const code = await exited;
  clearTimeout(killTimer);
  assert.ok(started, `no ${message} log line within 20 s:\n${stdout}\n${stderr}`);
  return { code, stdout, stderr };
}

function errorLines(result: CliResult): string[] {
  return result.stderr.split('\n').filter((line) => line.startsWith('error: '));
}

/** Returns control-plane flags that listen on port 0 and keep the embedded store in `dataDir`. */
function portZeroStoreArgs(dataDir: string): string[] {
  return ['--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir];
}

function assertUsageError(result: CliResult, label: string): void {
  assert.equal(result.code, 2, `${label}: ${result.stderr}`);
  assert.doesNotMatch(result.stderr, /^\s+at /m, `${label}: stack trace printed`);
  assert.doesNotMatch(
    result.stderr,
    /"msg":"[^"]*(listening|store opened)"/,
    `${label}: a server started`,
  );
}

describe('loom flag values', { timeout: 240_000 }, () => {
  let dir: string;
  let proxyArgs: string[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-flags-'));
    proxyArgs = [
      'data-plane',
      '--control-plane',
      `127.0.0.1:${await findFreePort()}`,
      '--listen',
      `127.0.0.1:${await findFreePort()}`,
      '--admin-listen',
      `127.0.0.1:${await findFreePort()}`,
    ];
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Starts a control plane with `--etcd-watch-check-interval`, in a data dir of its own. */
  async function watchCheckInterval(dataDir: string, interval: string): Promise<CliResult> {
    return loom([
      'control-plane',
      '--listen',
      `127.0.0.1:${await findFreePort()}`,
      '--admin-listen',
      `127.0.0.1:${await findFreePort()}`,
      '--data-dir',
      join(dir, dataDir),
      '--etcd-watch-check-interval',
      interval,
    ]);
  }

  test('zero proxy limits rejected', async () => {
    const cases = [
      { flag: '--max-header-count', expected: 'header fields, at least 1', example: 100 },
      { flag: '--max-header-bytes', expected: 'bytes, at least 1', example: 16384 },
      { flag: '--max-response-header-bytes', expected: 'bytes, at least 1', example: 16384 },
    ];
    for (const { flag, expected, example } of cases) {
      const result = await loom([...proxyArgs, flag, '0']);
      assertUsageError(result, flag);
      assert.deepEqual(errorLines(result), [
        `error: invalid ${flag} "0": expected a whole number of ${expected}; ` +
          `use a value such as ${example}`,
      ]);
    }
    for (const flag of ['--headers-timeout', '--upstream-keep-alive']) {
      const result = await loom([...proxyArgs, flag, '0']);
      assertUsageError(result, flag);
      assert.deepEqual(errorLines(result), [
        `error: invalid ${flag} "0": expected a duration above 0, such as 700ms or 30s`,
      ]);
    }
  });

  test('invalid proxy ids rejected', async () => {
    for (const [id, problem] of [
      ['', 'is empty'],
      ['p'.repeat(254), 'has 254 characters; at most 253 are allowed'],
      ['proxy\n1', 'contains a control character'],
    ]) {
      const result = await loom([...proxyArgs, '--id', id]);
      assertUsageError(result, '--id');
      assert.deepEqual(errorLines(result), [
        `error: invalid --id ${JSON.stringify(id.slice(0, 80))}: it ${problem}; use a name ` +
          'such as the pod name',
      ]);
    }
  });

  test('missing control plane listed', async () => {
    const result = await loom(['data-plane', '--drain-timeout', '30', '--workers', 'two']);
    assertUsageError(result, 'missing --control-plane');
    assert.deepEqual(errorLines(result), [
      "error: required option '--control-plane <addresses>' not specified; pass the gRPC " +
        'address of the control plane, such as --control-plane 127.0.0.1:7400',
      'error: invalid --drain-timeout "30": a duration needs a unit; write 30ms or 30s',
      'error: invalid --workers "two": expected a whole number, or 0 or auto for one worker ' +
        'per core',
    ]);
  });

  test('every invalid limit reported', async () => {
    const result = await loom([
      ...proxyArgs,
      '--headers-timeout',
      '1e3',
      '--upstream-connect-timeout',
      '-1',
      '--upstream-headers-timeout',
      '600h',
      '--max-request-body',
      '10MB',
    ]);
    assertUsageError(result, 'four invalid flags');
    const errors = errorLines(result);
    assert.equal(errors.length, 4, result.stderr);
    assert.match(errors[0], /^error: invalid --max-request-body "10MB": expected .* 0 or more/);
    assert.match(errors[1], /^error: invalid --headers-timeout "1e3": /);
    assert.match(
      errors[2],
      /^error: invalid --upstream-connect-timeout "-1": expected a duration .*, or 0 \(no timeout\)$/,
    );
    assert.match(
      errors[3],
      /^error: invalid --upstream-headers-timeout "600h": expected at most 2147483647ms /,
    );
  });

  test('invalid durations named', async () => {
    const cases = [
      {
        flag: '--send-timeout',
        value: '60sec',
        message: 'expected a duration such as 700ms, 30s, 5m, 1h or 1m30s, or 0 (no limit)',
      },
      {
        flag: '--upstream-keep-alive',
        value: '0s',
        message: 'expected a duration above 0, such as 700ms or 30s',
      },
    ];
    for (const { flag, value, message } of cases) {
      const result = await loom([...proxyArgs, flag, value]);
      assertUsageError(result, flag);
      assert.deepEqual(errorLines(result), [`error: invalid ${flag} "${value}": ${message}`]);
    }
  });

  test('bare numbers in durations refused', async () => {
    const flags = [
      '--headers-timeout',
      '--upstream-connect-timeout',
      '--drain-timeout',
      '--drain-idle-grace',
      '--drain-accept-grace',
    ];
    const result = await loom([...proxyArgs, ...flags.flatMap((flag) => [flag, '1500'])]);
    assertUsageError(result, 'bare numbers');
    assert.deepEqual(
      errorLines(result).sort(),
      flags
        .map(
          (flag) => `error: invalid ${flag} "1500": a duration needs a unit; write 1500ms or 1500s`,
        )
        .sort(),
    );

    const controlPlane = await watchCheckInterval('bare-number', '10');
    assertUsageError(controlPlane, '--etcd-watch-check-interval');
    assert.deepEqual(errorLines(controlPlane), [
      'error: invalid --etcd-watch-check-interval "10": a duration needs a unit; write 10ms or 10s',
    ]);
  });

  test('request timeout below headers timeout', async () => {
    const result = await loom([
      ...proxyArgs,
      '--headers-timeout',
      '20s',
      '--request-timeout',
      '5s',
    ]);
    assertUsageError(result, '--request-timeout');
    assert.deepEqual(errorLines(result), [
      'error: invalid --request-timeout "5s": expected 0 or at least --headers-timeout ' +
        '(20s); use 0 for no timeout, or raise it to 20s or more',
    ]);
  });

  test('invalid trusted proxy named', async () => {
    const result = await loom([...proxyArgs, '--trusted-proxies', '10.0.0.0/8,999.1.1.1/40']);
    assertUsageError(result, '--trusted-proxies');
    assert.deepEqual(errorLines(result), [
      'error: invalid --trusted-proxies "10.0.0.0/8,999.1.1.1/40": "999.1.1.1/40" is not an ' +
        'IPv4 or IPv6 address or CIDR range; use entries such as 10.0.0.0/8, 127.0.0.1 or ' +
        'fd00::/8, separated by commas',
    ]);
  });

  test('invalid escaped-slashes action named', async () => {
    const result = await loom([...proxyArgs, '--escaped-slashes', 'redirect']);
    assertUsageError(result, '--escaped-slashes');
    assert.deepEqual(errorLines(result), [
      'error: invalid --escaped-slashes "redirect": expected keep (forward "%2F" as data, the ' +
        'default) or reject (respond with 400)',
    ]);
  });

  test('help lists escaped-slashes actions', async () => {
    const result = await loom(['data-plane', '--help']);
    assert.equal(result.code, 0, result.stderr);
    const help = result.stdout.replace(/\s+/g, ' ');
    assert.match(
      help,
      /--escaped-slashes <action> [^-]*keep forwards it as data, reject responds with 400/,
    );
    assert.match(help, /--escaped-slashes <action> [^-]*\(default: "keep"\)/);
  });

  test('drain timeout beyond timer range', async () => {
    const result = await loom([...proxyArgs, '--drain-timeout', '1000h']);
    assertUsageError(result, '--drain-timeout');
    assert.match(
      result.stderr,
      /^error: invalid --drain-timeout "1000h": expected at most 2147483647ms .*; use a shorter duration/m,
    );
  });

  test('sub-millisecond durations rejected', async () => {
    const flags = [
      '--control-plane-timeout',
      '--drain-timeout',
      '--snapshot-cache-max-age',
      '--upstream-connect-timeout',
      '--upstream-headers-timeout',
      '--upstream-body-timeout',
    ];
    const result = await loom([...proxyArgs, ...flags.flatMap((flag) => [flag, '0.4ms'])]);
    assertUsageError(result, 'data-plane durations');
    const lines = errorLines(result);
    for (const flag of flags) {
      assert.ok(
        lines.includes(
          `error: invalid ${flag} "0.4ms": it rounds to 0ms, which the flag reads as 0 (see ` +
            '--help), not as a short duration; use 1ms or more',
        ),
        `${flag}: ${result.stderr}`,
      );
    }
    assert.equal(lines.length, flags.length, result.stderr);

    const controlPlane = await watchCheckInterval('sub-millisecond', '0.0001s');
    assertUsageError(controlPlane, '--etcd-watch-check-interval');
    assert.deepEqual(errorLines(controlPlane), [
      'error: invalid --etcd-watch-check-interval "0.0001s": it rounds to 0ms; use 1ms or more',
    ]);
  });

  test('connection idle timeout checked', async () => {
    const controlPlaneArgs = [
      'control-plane',
      '--listen',
      `127.0.0.1:${await findFreePort()}`,
      '--admin-listen',
      `127.0.0.1:${await findFreePort()}`,
      '--data-dir',
      join(dir, 'connection-idle-timeout'),
    ];
    const cases = [
      ['soon', 'expected a duration such as 700ms, 30s, 5m, 1h or 1m30s'],
      ['60', 'a duration needs a unit; write 60ms or 60s'],
      ['1000h', 'expected at most 2147483647ms'],
    ];
    for (const [value, expected] of cases) {
      const result = await loom([...controlPlaneArgs, '--connection-idle-timeout', value]);
      assertUsageError(result, `--connection-idle-timeout ${value}`);
      const lines = errorLines(result);
      assert.equal(lines.length, 1, result.stderr);
      assert.ok(lines[0].startsWith(`error: invalid --connection-idle-timeout "${value}"`));
      assert.ok(lines[0].includes(expected), lines[0]);
    }

    const help = (await loom(['control-plane', '--help'])).stdout.replace(/\s+/g, ' ');
    assert.match(help, /--connection-idle-timeout <duration> [^-]*; 0 keeps it open/);
  });

  test('upstream timeout units rejected', async () => {
    const result = await loom([...proxyArgs, '--upstream-body-timeout', '30 seconds']);
    assertUsageError(result, '--upstream-body-timeout');
    assert.deepEqual(errorLines(result), [
      'error: invalid --upstream-body-timeout "30 seconds": expected a duration such as 700ms, ' +
        '30s, 5m, 1h or 1m30s, or 0 (no timeout)',
    ]);
  });

  test('timeouts with units start proxy', async () => {
    const result = await startThenStop(
      [
        ...proxyArgs,
        '--upstream-connect-timeout',
        '700ms',
        '--upstream-headers-timeout',
        '1.5s',
        '--upstream-body-timeout',
        '1m30s',
        '--headers-timeout',
        '10s',
        '--request-timeout',
        '5m',
        '--send-timeout',
        '60s',
        '--tunnel-idle-timeout',
        '1h',
        '--upstream-keep-alive',
        '4s',
      ],
      'proxy listening',
    );
    assert.equal(result.code, 0, result.stderr);
  });

  test('zero timeouts start proxy', async () => {
    const result = await startThenStop(
      [
        ...proxyArgs,
        '--upstream-connect-timeout',
        '0',
        '--upstream-headers-timeout',
        '0',
        '--upstream-body-timeout',
        '0',
        '--tunnel-idle-timeout',
        '0',
        '--send-timeout',
        '0',
        '--request-timeout',
        '0',
        '--max-request-body',
        '0',
        '--drain-timeout',
        '0',
        '--trusted-proxies',
        '10.0.0.0/8, 127.0.0.1,fd00::/8',
      ],
      'proxy listening',
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /"msg":"drain finished"/);
  });

  test('help states zero meanings', async () => {
    const result = await loom(['data-plane', '--help']);
    assert.equal(result.code, 0, result.stderr);
    const help = result.stdout.replace(/\s+/g, ' ');
    for (const flag of [
      '--upstream-connect-timeout',
      '--upstream-headers-timeout',
      '--upstream-body-timeout',
    ]) {
      assert.match(help, new RegExp(`${flag} <duration> [^-]*; 0 means no timeout`), flag);
    }
    assert.match(help, /--tunnel-idle-timeout <duration> [^-]*; 0 means no limit/);
    assert.match(help, /--send-timeout <duration> [^-]*; 0 means no limit/);
    assert.match(help, /--drain-timeout <duration> .*; 0 closes their connections at once/);
    assert.match(help, /--drain-idle-grace <duration> .*; 0 closes them at once/);
    assert.match(help, /--drain-accept-grace <duration> .*; 0 closes it at once/);
  });

  test('etcd endpoint forms rejected', async () => {
    const cases: { value: string; message: string }[] = [
      { value: 'notaurl', message: 'invalid --etcd endpoint "notaurl": ' },
      {
        value: 'http://127.0.0.1:27379,ftp://x:1',
        message: 'invalid --etcd endpoint "ftp://x:1": ',
      },
      { value: 'http://127.0.0.1', message: 'invalid --etcd endpoint "http://127.0.0.1": ' },
      { value: '127.0.0.1:2379', message: 'invalid --etcd endpoint "127.0.0.1:2379": ' },
      {
        value: 'http://127.0.0.1:2379/v3',
        message: 'invalid --etcd endpoint "http://127.0.0.1:2379/v3": ',
      },
      {
        value: 'http://127.0.0.1:2379/',
        message: 'invalid --etcd endpoint "http://127.0.0.1:2379/": ',
      },
      { value: 'http://127.0.0.1:0', message: 'invalid --etcd endpoint "http://127.0.0.1:0": ' },
    ];
    const dataDir = join(dir, 'store-etcd');
    for (const { value, message } of cases) {
      const result = await loom(['control-plane', '--etcd', value, ...portZeroStoreArgs(dataDir)]);
      assertUsageError(result, value);
      assert.deepEqual(errorLines(result), [
        `error: ${message}expected http://HOST:PORT or https://HOST:PORT, such as ` +
          'http://127.0.0.1:2379, with several endpoints separated by commas',
      ]);
    }
    assert.equal(existsSync(dataDir), false, 'a rejected command line created the data dir');
  });

  test('etcd scheme mix rejected', async () => {
    const mixed = 'http://127.0.0.1:27379,https://127.0.0.1:27380';
    const result = await loom(['control-plane', '--etcd', mixed]);
    assertUsageError(result, mixed);
    assert.match(
      result.stderr,
      /^error: invalid --etcd "http:\/\/127\.0\.0\.1:27379,https:\/\/127\.0\.0\.1:27380": it mixes http:\/\/ and https:\/\/ endpoints; use https:\/\/ for every member/m,
    );

    const empty = await loom(['control-plane', '--etcd', ',']);
    assertUsageError(empty, 'empty --etcd');
    assert.match(empty.stderr, /^error: missing endpoint in --etcd ",": .*leave --etcd out/m);
  });

  test('store prefix without slash named', async () => {
    const dataDir = join(dir, 'store-prefix');
    const result = await loom([
      'control-plane',
      '--prefix',
      '/loom',
      ...portZeroStoreArgs(dataDir),
    ]);
    assertUsageError(result, '--prefix /loom');
    assert.deepEqual(errorLines(result), [
      'error: invalid --prefix "/loom": the key prefix must end with "/"; use --prefix /loom/',
    ]);
    assert.equal(existsSync(dataDir), false, 'a rejected command line created the data dir');
  });

  test('valid etcd endpoints start', async () => {
    // Nothing listens at these ports, so the control plane starts and keeps retrying etcd.
    const endpoints = `http://127.0.0.1:${await findFreePort()},http://[::1]:${await findFreePort()}`;
    const result = await startThenStop(
      [
        'control-plane',
        '--etcd',
        endpoints,
        '--listen',
        `127.0.0.1:${await findFreePort()}`,
        '--admin-listen',
        `127.0.0.1:${await findFreePort()}`,
      ],
      'admin listening',
    );
    assert.equal(result.code, 0, result.stderr);
  });

  test('shared listen address rejected', async () => {
    const port = await findFreePort();
    const controlPlane = `127.0.0.1:${await findFreePort()}`;
    const cases = [
      {
        args: ['data-plane', '--control-plane', controlPlane],
        listen: `127.0.0.1:${port}`,
        admin: `127.0.0.1:${port}`,
        overlap: 'names the same address',
      },
      {
        args: ['data-plane', '--control-plane', controlPlane],
        listen: `0.0.0.0:${port}`,
        admin: `127.0.0.1:${port}`,
        overlap: `binds port ${port} too`,
      },
      {
        args: ['control-plane', '--data-dir', join(dir, 'store-listen')],
        listen: `127.0.0.1:${port}`,
        admin: `127.0.0.1:${port}`,
        overlap: 'names the same address',
      },
      {
        args: ['control-plane', '--data-dir', join(dir, 'store-listen')],
        listen: `[::]:${port}`,
        admin: `127.0.0.1:${port}`,
        overlap: `binds port ${port} too`,
      },
    ];
    for (const { args, listen, admin, overlap } of cases) {
      const result = await loom([...args, '--listen', listen, '--admin-listen', admin]);
      assertUsageError(result, `${args[0]} ${listen} ${admin}`);
      assert.deepEqual(errorLines(result), [
        `error: invalid --admin-listen "${admin}": --listen "${listen}" ${overlap}; ` +
          'give each listener its own port',
      ]);
    }
    assert.equal(existsSync(join(dir, 'store-listen')), false, 'the store was opened');
  });

  test('port zero listeners start', async () => {
    const result = await startThenStop(
      [
        'control-plane',
        '--listen',
        '127.0.0.1:0',
        '--admin-listen',
        '127.0.0.1:0',
        '--data-dir',
        join(dir, 'store-port-zero'),
      ],
      'admin listening',
    );
    assert.equal(result.code, 0, result.stderr);
  });
});
