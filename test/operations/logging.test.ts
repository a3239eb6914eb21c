import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { LoomError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { AccessLog } from '../../data-plane/observability/access-log.js';
import { programEntry, ROOT, waitFor, waitForPort } from '../../scripts/processes.js';
import { findFreePort } from '../helpers/ports.js';
import { within } from '../proxy/harness.js';

/** Collects the lines a logger writes. */
function memoryDestination(): { lines: string[]; write(line: string): void } {
  const lines: string[] = [];
  return { lines, write: (line: string) => void lines.push(line) };
}

describe('logger', () => {
  test('logger redacts secrets', () => {
    const destination = memoryDestination();
    const logger = createLogger({ name: 'test', destination });
    logger.info(
      {
        token: 'secret-1',
        password: 'secret-2',
        headers: { authorization: 'Bearer secret-3', cookie: 'session=secret-4' },
        req: { headers: { authorization: 'Bearer secret-5', cookie: 'session=secret-6' } },
        etcd: { password: 'secret-7' },
        auth: { password: 'secret-8', token: 'secret-9' },
        authorization: 'Bearer secret-10',
        proxyId: 'proxy-1',
      },
      'secrets inside',
    );
    logger.child({ component: 'admin' }).warn({ password: 'secret-11' }, 'child line');

    const output = destination.lines.join('');
    assert.doesNotMatch(output, /secret-\d+/);
    assert.match(output, /\[redacted\]/);
    assert.match(output, /"proxyId":"proxy-1"/);
    assert.equal(destination.lines.length, 2);
  });

  test('logger level from environment', () => {
    const previous = process.env.LOOM_LOG_LEVEL;
    try {
      process.env.LOOM_LOG_LEVEL = 'warn';
      assert.equal(createLogger({ name: 'test', destination: memoryDestination() }).level, 'warn');
      const explicit = createLogger({
        name: 'test',
        level: 'debug',
        destination: memoryDestination(),
      });
      assert.equal(explicit.level, 'debug');
      delete process.env.LOOM_LOG_LEVEL;
      assert.equal(createLogger({ name: 'test', destination: memoryDestination() }).level, 'info');
    } finally {
      if (previous === undefined) delete process.env.LOOM_LOG_LEVEL;
      else process.env.LOOM_LOG_LEVEL = previous;
    }
  });

  test('logger rejects unknown level', () => {
    assert.throws(
      () => createLogger({ name: 'test', level: 'verbose', destination: memoryDestination() }),
      (error: unknown) =>
        error instanceof LoomError &&
        error.code === 'LOOM_INVALID_ARGUMENT' &&
        error.message.includes('invalid --log-level "verbose"'),
    );
  });
});

describe('access log', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-access-log-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const entry = {
    route: 'get-user',
    method: 'GET',
    path: '/users/"42"?token=secret',
    status: 200,
    upstream: 'users',
    target: 'http://127.0.0.1:9001',
    bytesSent: 120,
    durationSeconds: 0.0012345,
  };

  test('access log writes json lines', async () => {
    const file = join(dir, 'access.log');
    const log = AccessLog.open(
      file,
      createLogger({ name: 'test', destination: memoryDestination() }),
    );
    assert.equal(log.enabled, true);
    log.write(entry);
    log.write({ ...entry, route: '(unmatched)', status: 404, upstream: '', target: '' });
    await log.close();
    log.write(entry);

    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, 2);
    const first = JSON.parse(lines[0]) as Record<string, unknown>;
    assert.equal(typeof first.time, 'number');
    assert.deepEqual(
      { ...first, time: 0 },
      {
        time: 0,
        route: 'get-user',
        method: 'GET',
        path: '/users/"42"',
        status: 200,
        upstream: 'users',
        target: 'http://127.0.0.1:9001',
        bytesSent: 120,
        durationMs: 1.235,
      },
    );
    assert.equal((JSON.parse(lines[1]) as { status: number }).status, 404);
    assert.doesNotMatch(lines.join('\n'), /secret/);
  });

  test('access log lines for unusual values', async () => {
    const file = join(dir, 'values.log');
    const log = AccessLog.open(
      file,
      createLogger({ name: 'test', destination: memoryDestination() }),
    );
    // Each row changes one value of `entry` and lists the fields that the line must have.
    // Durations are in milliseconds, rounded to the microsecond.
    const rows: { change: Partial<typeof entry>; expected: Record<string, unknown> }[] = [
      { change: { path: '/users/42?token=secret' }, expected: { path: '/users/42' } },
      { change: { path: '/caf\u00e9/\u2028' }, expected: { path: '/caf\u00e9/\u2028' } },
      { change: { path: '/a\\b\u0001' }, expected: { path: '/a\\b\u0001' } },
      { change: { path: '' }, expected: { path: '' } },
      { change: { method: 'BREW' }, expected: { method: 'BREW' } },
      { change: { status: 0 }, expected: { status: 0 } },
      { change: { status: 999 }, expected: { status: 999 } },
      { change: { status: 1000 }, expected: { status: 1000 } },
      { change: { bytesSent: 0 }, expected: { bytesSent: 0 } },
      { change: { bytesSent: 9007199254740991 }, expected: { bytesSent: 9007199254740991 } },
      { change: { bytesSent: 2 ** 60 }, expected: { bytesSent: 2 ** 60 } },
      { change: { durationSeconds: 0 }, expected: { durationMs: 0 } },
      { change: { durationSeconds: 0.000005 }, expected: { durationMs: 0.005 } },
      { change: { durationSeconds: 0.00034 }, expected: { durationMs: 0.34 } },
      { change: { durationSeconds: 15 }, expected: { durationMs: 15000 } },
      { change: { durationSeconds: -1 }, expected: { durationMs: 0 } },
      { change: { durationSeconds: Number.NaN }, expected: { durationMs: 0 } },
      { change: { durationSeconds: 1e12 }, expected: { durationMs: 1e15 } },
    ];
    for (const row of rows) log.write({ ...entry, ...row.change });
    log.write({ ...entry, path: '/users/42' });
    await log.close();

    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, rows.length + 1);
    for (const [index, row] of rows.entries()) {
      const fields = JSON.parse(lines[index]) as Record<string, unknown>;
      for (const [name, value] of Object.entries(row.expected)) {
        assert.equal(fields[name], value, `${name} of row ${index}`);
      }
    }
    const plain = lines[rows.length].replace(/^\{"time":\d+,/, '{');
    assert.equal(
      plain,
      '{"route":"get-user","method":"GET","path":"/users/42","status":200,' +
        '"upstream":"users","target":"http://127.0.0.1:9001","bytesSent":120,"durationMs":1.235}',
    );
  });

  test('access log reopens after rotation', async () => {
    const file = join(dir, 'rotated.log');
    const log = AccessLog.open(
      file,
      createLogger({ name: 'test', destination: memoryDestination() }),
    );
    log.write(entry);
    await waitFor('the first line', 5_000, () => readFileSync(file, 'utf8').length > 0);
    renameSync(file, `${file}.1`);
    log.reopen();
    log.write({ ...entry, status: 201 });
    await log.close();

    assert.equal(readFileSync(`${file}.1`, 'utf8').trimEnd().split('\n').length, 1);
    const rotated = readFileSync(file, 'utf8').trimEnd().split('\n');
    assert.equal(rotated.length, 1);
    assert.equal((JSON.parse(rotated[0]) as { status: number }).status, 201);
  });

  test('access log closes during reopen', async () => {
    // The reopen comes right after the first line reached the file, usually while sonic-boom
    // still waits for that write's callback. A few rounds make that case near certain.
    for (let round = 0; round < 5; round++) {
      const file = join(dir, `reopening-${round}.log`);
      const log = AccessLog.open(
        file,
        createLogger({ name: 'test', destination: memoryDestination() }),
      );
      log.write(entry);
      log.flush();
      const deadline = Date.now() + 5_000;
      while (readFileSync(file, 'utf8').length === 0 && Date.now() < deadline) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      renameSync(file, `${file}.1`);
      log.reopen();
      log.write({ ...entry, status: 201 });
      await within(log.close(), 'the access log close');

      const first = readFileSync(`${file}.1`, 'utf8').trimEnd().split('\n');
      assert.equal((JSON.parse(first[0]) as { status: number }).status, 200);
      const reopened = readFileSync(file, 'utf8').trimEnd().split('\n');
      assert.equal((JSON.parse(reopened[0]) as { status: number }).status, 201);
    }
  });

  test('access log survives failed reopen', async () => {
    const folder = join(dir, 'moved-folder');
    mkdirSync(folder);
    const file = join(folder, 'access.log');
    const destination = memoryDestination();
    const log = AccessLog.open(file, createLogger({ name: 'test', destination }));
    log.write(entry);
    log.flush();
    renameSync(folder, `${folder}.1`);
    // The folder is gone, so the file cannot be opened again.
    log.reopen();
    await waitFor('the write failure warning', 5_000, () => destination.lines.length > 0);
    log.write({ ...entry, status: 201 });
    await within(log.close(), 'the access log close');

    const lines = readFileSync(join(`${folder}.1`, 'access.log'), 'utf8')
      .trimEnd()
      .split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]) as { status: number }).status, 200);
    assert.equal(destination.lines.length, 1);
    assert.match(destination.lines[0], /access log write failed/);
  });

  test('access log off by default', async () => {
    const log = AccessLog.open(
      undefined,
      createLogger({ name: 'test', destination: memoryDestination() }),
    );
    assert.equal(log.enabled, false);
    log.write(entry);
    await log.close();
    assert.equal(AccessLog.open('off', createLogger({ name: 'test' })).enabled, false);
  });

  test('access log rejects unwritable path', () => {
    const path = join(dir, 'missing-directory', 'access.log');
    assert.throws(
      () => AccessLog.open(path, createLogger({ name: 'test', destination: memoryDestination() })),
      (error: unknown) =>
        error instanceof LoomError &&
        error.code === 'LOOM_INVALID_ARGUMENT' &&
        error.message.includes(path) &&
        error.message.includes('--access-log stdout'),
    );
  });
});

interface Exited {
  code: number | null;
  stderr: string;
}

/** Runs `loom ARGS` until it exits or `untilPort` accepts connections, then stops it. */
async function runLoom(
  args: string[],
  env: NodeJS.ProcessEnv,
  untilPort?: number,
): Promise<Exited> {
  const child = spawn(process.execPath, [programEntry('loom'), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  if (untilPort !== undefined) {
    await Promise.race([waitForPort('127.0.0.1', untilPort), exited]);
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const code = await exited;
  clearTimeout(timer);
  return { code, stderr };
}

describe('server log options', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-log-options-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('invalid log level exits 2', async () => {
    const result = await runLoom(
      ['control-plane', '--log-level', 'loud', '--data-dir', join(dir, 'a')],
      {},
    );
    assert.equal(result.code, 2);
    assert.match(result.stderr, /invalid --log-level "loud"/);
  });

  test('pretty logs from control plane', async () => {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const result = await runLoom(
      [
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--data-dir',
        join(dir, 'b'),
        '--log-pretty',
      ],
      {},
      adminPort,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /control plane listening/);
    assert.doesNotMatch(result.stderr.split('\n')[0], /^\{/);
  });

  test('pretty logs keep error strings inline', async () => {
    const script =
      "import { createLogger } from './common/logger.ts';" +
      "const logger = createLogger({ name: 'pretty', pretty: true });" +
      "logger.warn({ proxyId: 'p1', error: 'route rejected' }, 'version nacked');";
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: ROOT,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await within(
      new Promise<number | null>((resolve) => child.once('close', resolve)),
      'the logging process to exit',
    );

    assert.equal(code, 0, stderr);
    const line = stderr.split('\n').find((text) => text.includes('version nacked')) ?? '';
    assert.match(line, /"error":"route rejected"/, stderr);
  });

  // A pino transport's worker thread delayed the exit by 10 s once the pipe had no reader.
  test('pretty logs to a closed pipe', async () => {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const child = spawn(
      process.execPath,
      [
        programEntry('loom'),
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--data-dir',
        join(dir, 'c'),
        '--log-pretty',
      ],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    try {
      await waitForPort('127.0.0.1', adminPort);
      child.stderr.destroy();
      child.kill('SIGTERM');
      assert.equal(await within(exited, 'the control plane to exit', 6_000), 0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('environment level for data plane', async () => {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const args = [
      'data-plane',
      '--control-plane',
      '127.0.0.1:1',
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
    ];
    const quiet = await runLoom(args, { LOOM_LOG_LEVEL: 'warn' }, adminPort);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.doesNotMatch(quiet.stderr, /"msg":"proxy listening"/);

    const verbose = await runLoom(
      [...args, '--log-level', 'info'],
      { LOOM_LOG_LEVEL: 'warn' },
      adminPort,
    );
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.match(verbose.stderr, /"msg":"proxy listening"/);
  });
});
