import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttp2Server, type Http2Server } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Server as GrpcServer, ServerCredentials } from '@grpc/grpc-js';

import { programEntry, ROOT, startLoom, waitFor } from '../../scripts/processes.js';
import type { CliResult } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

/**
 * Runs `NAME ARGS` (see `programEntry`) without a control plane; a run past 60 s is killed
 * (code -1).
 */
function run(name: 'loom' | 'loomctl', args: string[], env = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [programEntry(name), ...args],
      { cwd: ROOT, timeout: 60_000, killSignal: 'SIGKILL', env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) code = typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function longLines(text: string, width: number): string[] {
  return text.split('\n').filter((line) => line.length > width);
}

describe('loomctl usage errors', { timeout: 120_000 }, () => {
  test('control-plane address without port', async () => {
    const result = await run('loomctl', ['--control-plane', '7400', 'status']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: invalid --control-plane "7400"; expected HOST:PORT/m);
    assert.doesNotMatch(result.stderr, /^Usage:/m);
  });

  test('control-plane address with scheme', async () => {
    const result = await run('loomctl', ['--control-plane', 'http://127.0.0.1:7400', 'status']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      result.stderr,
      /^error: invalid --control-plane "http:\/\/127\.0\.0\.1:7400"; .*without a scheme \(TLS is set with --tls-ca\)$/m,
    );
  });

  test('control-plane from environment checked', async () => {
    const result = await run('loomctl', ['get'], { LOOM_CONTROL_PLANE: 'grpc://127.0.0.1:7400' });
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: invalid LOOM_CONTROL_PLANE "grpc:\/\/127\.0\.0\.1:7400"/m);
    assert.doesNotMatch(result.stderr, /^Usage:/m);
  });

  test('file without -f names fix', async () => {
    for (const verb of ['apply', 'diff', 'validate']) {
      const result = await run('loomctl', [verb, 'examples/quickstart.yaml']);
      assert.equal(result.code, 2, `${verb}: ${result.stderr}`);
      assert.match(
        result.stderr,
        new RegExp(
          `^error: unexpected argument "examples/quickstart\\.yaml"; files are given with -f, ` +
            `such as: loomctl ${verb} -f examples/quickstart\\.yaml$`,
          'm',
        ),
      );
      assert.doesNotMatch(result.stderr, /required option/);
    }
  });

  test('short watch interval prints usage', async () => {
    for (const interval of ['50ms', '0.05s']) {
      const result = await run('loomctl', ['status', '--watch', '--interval', interval]);
      assert.equal(result.code, 2, `${interval}: ${result.stderr}`);
      assert.match(
        result.stderr,
        new RegExp(
          `^error: option '--interval <duration>' argument '${interval.replace('.', '\\.')}' ` +
            'is invalid\\. The interval must be at least 100ms',
          'm',
        ),
      );
      assert.match(result.stderr, /^Usage: loomctl status \[options\]$/m, interval);
    }
  });

  test('stray word and missing -f', async () => {
    const stray = await run('loomctl', ['validate', 'everything']);
    assert.equal(stray.code, 2, stray.stderr);
    assert.match(stray.stderr, /^error: too many arguments for 'validate'/m);
    const missing = await run('loomctl', ['apply']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /^error: required option '-f, --filename <file\.\.\.>'/m);
    assert.match(missing.stderr, /such as: loomctl apply -f loom\.yaml$/m);
  });

  test('-f without a file names fix', async () => {
    for (const [verb, flag] of [
      ['apply', '-f'],
      ['diff', '--filename'],
      ['validate', '-f'],
    ]) {
      const result = await run('loomctl', [verb, flag]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr,
        /^error: option '-f, --filename <file\.\.\.>' argument missing;/m,
      );
      assert.ok(
        result.stderr.includes(
          `such as: loomctl ${verb} -f loom.yaml (or -f - for standard input)`,
        ),
        result.stderr,
      );
    }
  });

  test('--file and --files name -f', async () => {
    const cases = [
      { args: ['apply', '--file', 'examples/quickstart.yaml'], flag: '--file', verb: 'apply' },
      { args: ['diff', '--files=examples/quickstart.yaml'], flag: '--files', verb: 'diff' },
      {
        args: ['validate', '--file', 'examples/quickstart.yaml'],
        flag: '--file',
        verb: 'validate',
      },
      {
        args: ['explain', 'GET', '--file', 'examples/quickstart.yaml', '/users/1'],
        flag: '--file',
        verb: 'explain',
      },
    ];
    for (const { args, flag, verb } of cases) {
      const result = await run('loomctl', args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(
        result.stderr,
        new RegExp(
          `^error: unknown option '${flag}'; files are given with -f or --filename, such as: ` +
            `loomctl ${verb} -f examples/quickstart\\.yaml$`,
          'm',
        ),
      );
    }
    const help = await run('loomctl', ['apply', '--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.doesNotMatch(help.stdout, /--files?\b/);
  });

  test('config file given to --config names -f', async () => {
    const viaFlag = await run('loomctl', ['apply', '--config', 'examples/quickstart.yaml']);
    assert.equal(viaFlag.code, 1, viaFlag.stderr);
    assert.match(
      viaFlag.stderr,
      /^error: invalid loomctl config examples\/quickstart\.yaml: it declares routes or upstreams, which are given with -f, such as: loomctl apply -f examples\/quickstart\.yaml\. A loomctl config \(--config or LOOMCTL_CONFIG\) contains only controlPlane, token and tls$/m,
    );
    const viaEnvironment = await run('loomctl', ['get'], {
      LOOMCTL_CONFIG: 'examples/quickstart.yaml',
    });
    assert.equal(viaEnvironment.code, 1, viaEnvironment.stderr);
    assert.match(viaEnvironment.stderr, /it declares routes or upstreams, which are given with -f/);
  });

  test('help names gRPC address', async () => {
    const result = await run('loomctl', ['--help']);
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stdout, /admin address/);
    assert.match(result.stdout, /--control-plane <host:port>\s+gRPC address of the control plane/);
    assert.match(result.stdout, /resource not found/);
    assert.deepEqual(longLines(result.stdout, 80), []);
  });

  test('each verb lists its exit codes', async () => {
    const expected: Record<string, { has: RegExp[]; lacks: RegExp[] }> = {
      apply: { has: [/^ {2}3 {2}--wait/m, /version conflict/], lacks: [/diff/] },
      diff: {
        has: [/^ {2}0 {2}nothing would change/m, /something would change/],
        lacks: [/--wait/],
      },
      get: { has: [/resource not found/], lacks: [/diff|--wait|^ {2}3/m] },
      delete: { has: [/resource not found/, /version conflict/], lacks: [/diff|--wait/] },
      validate: { has: [/invalid configuration/], lacks: [/diff|--wait|control plane/] },
      explain: { has: [/invalid configuration/], lacks: [/diff|--wait/] },
      status: { has: [/unreachable control plane/], lacks: [/diff|--wait|not found/] },
      schema: { has: [/^ {2}2 {2}usage error/m], lacks: [/diff|--wait|^ {2}1 /m] },
    };
    for (const [verb, { has, lacks }] of Object.entries(expected)) {
      const result = await run('loomctl', [verb, '--help']);
      assert.equal(result.code, 0, result.stderr);
      const codes = result.stdout.slice(result.stdout.indexOf('Exit codes:'));
      for (const pattern of has) assert.match(codes, pattern, `${verb} --help`);
      for (const pattern of lacks) assert.doesNotMatch(codes, pattern, `${verb} --help`);
      assert.deepEqual(longLines(result.stdout, 80), [], `${verb} --help`);
      assert.doesNotMatch(result.stdout, /\(default: \[\]\)/, `${verb} --help`);
    }
  });

  test('closed output keeps exit code', async () => {
    // bin/loomctl.js itself, so that the suite also runs the shipped entry point through tsx.
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'loomctl.js'), 'apply'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // The reader goes away before loomctl writes, as `| head -1` does after its line.
    child.stdout.destroy();
    child.stderr.destroy();
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 2);
  });
});

describe('loom flag checks', { timeout: 120_000 }, () => {
  test('help wraps at 80 columns', async () => {
    for (const command of ['control-plane', 'data-plane']) {
      const result = await run('loom', [command, '--help']);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(longLines(result.stdout, 80), [], `${command} --help`);
    }
  });

  test('unreadable --config names the fix', async () => {
    for (const [path, reason] of [
      [join(ROOT, 'no-such-loomctl.yaml'), 'file not found'],
      [ROOT, 'it is a directory, not a file'],
    ]) {
      const result = await run('loomctl', ['--config', path, 'status']);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, new RegExp(`cannot read loomctl config .*: ${reason}; name a`));
      assert.doesNotMatch(result.stderr, /Error: E[A-Z]+/);
    }
  });

  test('help command and no command', async () => {
    for (const [name, args, code] of [
      ['loom', [], 2],
      ['loom', ['help'], 0],
      ['loom', ['help', 'data-plane'], 0],
      ['loomctl', [], 2],
      ['loomctl', ['help'], 0],
      ['loomctl', ['help', 'apply'], 0],
    ] as const) {
      const result = await run(name, [...args]);
      const label = [name, ...args].join(' ');
      assert.equal(result.code, code, `${label}: ${result.stderr}`);
      assert.match(result.stdout + result.stderr, /^Usage: /m, label);
    }
  });

  test('log levels in help accepted', async () => {
    const help = await run('loom', ['control-plane', '--help']);
    const listed = /--log-level <level>\s+([\s\S]*?)\(env/.exec(help.stdout)?.[1];
    assert.ok(listed, help.stdout);
    const levels = listed.replace(/\s+/g, ' ').trim().replace(' or ', ', ').split(', ');
    assert.deepEqual(levels, ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);
    const rejected = await run('loom', ['control-plane', '--log-level', 'loud']);
    assert.equal(rejected.code, 2, rejected.stderr);
    assert.match(rejected.stderr, /use one of trace, debug, info, warn, error, fatal, silent$/m);
  });

  test('every invalid flag reported', async () => {
    const result = await run('loom', [
      'data-plane',
      '--control-plane',
      '127.0.0.1',
      '--listen',
      ':8082',
      '--workers',
      'many',
    ]);
    assert.equal(result.code, 2, result.stderr);
    const errors = result.stderr.split('\n').filter((line) => line.startsWith('error: '));
    assert.equal(errors.length, 3, result.stderr);
    assert.match(errors[0], /^error: invalid --control-plane "127\.0\.0\.1"/);
    assert.match(errors[1], /^error: invalid --listen ":8082"/);
    assert.match(errors[2], /^error: invalid --workers "many"/);
  });
});

/** Starts a data plane at `address` and returns its reconnect log lines once there are three. */
async function reconnectLines(
  dir: string,
  address: string,
): Promise<{ address: string; hint?: string }[]> {
  const log = join(dir, 'data-plane.log');
  writeFileSync(log, '');
  const proxy = startLoom(
    'data-plane',
    [
      'data-plane',
      '--control-plane',
      address,
      '--listen',
      `127.0.0.1:${await findFreePort()}`,
      '--admin-listen',
      `127.0.0.1:${await findFreePort()}`,
    ],
    log,
  );
  const lost = () =>
    readFileSync(log, 'utf8')
      .split('\n')
      .filter((line) => line.includes('"control plane lost, reconnecting"'))
      .map((line) => JSON.parse(line) as { address: string; hint?: string });
  try {
    await waitFor('three reconnect log lines', 30_000, () => lost().length >= 3);
  } finally {
    await proxy.stop();
  }
  return lost();
}

describe('data plane at an HTTP port', { timeout: 120_000 }, () => {
  let dir: string;
  let http: Server;
  let address: string;
  let http2: Http2Server;
  let http2Address: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-cli-usage-'));
    // An HTTP/1 server plays the control plane's --admin-listen port.
    http = createServer((_, response) => response.end('ok\n'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(http.address() as { port: number }).port}`;
    // An HTTP/2 server that responds to every stream with a web page plays a load balancer.
    http2 = createHttp2Server((_, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<html><body>maintenance</body></html>\n');
    });
    await new Promise<void>((resolve) => http2.listen(0, '127.0.0.1', resolve));
    http2Address = `127.0.0.1:${(http2.address() as { port: number }).port}`;
  });
  after(async () => {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
    await new Promise((resolve) => http2.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  test('reconnect log hints at port', async () => {
    const lines = await reconnectLines(dir, address);

    assert.equal(
      lines[0].hint,
      `is ${address} the control plane's gRPC port (--listen), not its --admin-listen port?`,
    );
    assert.equal(lines.filter((line) => line.hint !== undefined).length, 1);
  });

  test('reconnect log names other gRPC server', async () => {
    // A gRPC server without Loom's services plays etcd at a wrong --control-plane.
    const grpc = new GrpcServer();
    const port = await new Promise<number>((resolve, reject) =>
      grpc.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    try {
      const lines = await reconnectLines(dir, `127.0.0.1:${port}`);

      assert.match(lines[0].hint ?? '', /a gRPC server other than the control plane, such as etcd/);
      assert.equal(lines.filter((line) => line.hint !== undefined).length, 1);
    } finally {
      grpc.forceShutdown();
    }
  });

  test('reconnect log names non-gRPC body', async () => {
    const lines = await reconnectLines(dir, http2Address);

    assert.match(lines[0].hint ?? '', /^the response from 127\.0\.0\.1:\d+ is not gRPC: /);
    assert.match(lines[0].hint ?? '', /the text "html"/);
    assert.equal(lines.filter((line) => line.hint !== undefined).length, 1);
  });
});
