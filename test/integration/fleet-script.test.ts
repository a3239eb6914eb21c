import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { ROOT, waitFor } from '../../scripts/processes.js';
import { loom, loomctl } from '../helpers/cli.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort, findFreePortRun } from '../helpers/ports.js';

/** Ports the fleet script uses from a base port: base to base + 6. */
const FLEET_PORTS = 7;

function listen(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function isListening(port: number): Promise<boolean> {
  const server = await listen(port);
  if (server === undefined) return true;
  await new Promise((resolve) => server.close(resolve));
  return false;
}

interface FleetScript {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `scripts/fleet.ts` through the tsx CLI, as `npm start` does. */
function runFleetScript(base: number, dataDir: string): FleetScript {
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'),
      'scripts/fleet.ts',
      '--base-port',
      String(base),
      '--data-dir',
      dataDir,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  return { child, output: () => output, exited };
}

/** Waits up to `ms` for the process to exit; kills it and fails when it does not. */
async function exitWithin(fleet: FleetScript, ms: number) {
  const timer = setTimeout(() => fleet.child.kill('SIGKILL'), ms);
  const result = await fleet.exited;
  clearTimeout(timer);
  return result;
}

/** Runs `SCRIPT ARGS` through the tsx CLI and collects its output; a run past 30 s is killed. */
function runScript(
  script: string,
  args: string[],
): Promise<{ code: number | null; output: string }> {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), script, ...args],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return once(child, 'exit').then(([code]) => {
    clearTimeout(timer);
    return { code: code as number | null, output };
  });
}

describe('fleet script', { timeout: 120_000 }, () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('serves both proxies, stops on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-script-'));
    dirs.push(dir);
    const base = await findFreePortRun(FLEET_PORTS);
    const fleet = runFleetScript(base, join(dir, 'store'));
    let config = '';
    try {
      await Promise.race([
        waitFor('the fleet banner', 60_000, () => fleet.output().includes('Loom fleet is running')),
        fleet.exited.then(() => assert.fail(`fleet exited during start:\n${fleet.output()}`)),
      ]);
      assert.match(fleet.output(), new RegExp(`http://127\\.0\\.0\\.1:${base + 2}`));

      // The banner's own command, with the copy of the quick-start file it names.
      const printed = /npx loomctl --control-plane (\S+) apply -f (\S+)/.exec(fleet.output());
      assert.ok(printed, `no apply command in the banner:\n${fleet.output()}`);
      assert.equal(printed[1], `127.0.0.1:${base}`);
      config = printed[2];
      assert.notEqual(dirname(config), tmpdir(), `${config} is not in a folder of its own`);
      assert.equal(statSync(dirname(config)).mode & 0o077, 0, `${dirname(config)} is shared`);
      assert.match(
        readFileSync(config, 'utf8'),
        new RegExp(`url: http://127\\.0\\.0\\.1:${base + 6}\\n`),
      );
      const applied = await loomctl(`127.0.0.1:${base}`, [
        'apply',
        '-f',
        config,
        '--wait',
        '--timeout',
        '30s',
      ]);
      assert.equal(applied.code, 0, applied.stderr);
      for (const port of [base + 2, base + 3]) {
        const response = await httpGet(`http://127.0.0.1:${port}/users/42`);
        assert.equal(response.status, 200, `proxy on ${port}: ${response.body}`);
        assert.equal((JSON.parse(response.body) as { upstream: string }).upstream, 'users');
      }
      // A request whose body never ends keeps the first proxy draining until its drain timeout.
      const stalled = connect(base + 2, '127.0.0.1');
      stalled.on('error', () => {});
      stalled.write(
        'POST /echo/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nab',
      );
      await sleep(500);
    } finally {
      fleet.child.kill('SIGTERM');
    }

    const { code, signal } = await exitWithin(fleet, 30_000);
    assert.equal(signal, null, `fleet was killed:\n${fleet.output()}`);
    assert.equal(code, 0, fleet.output());
    // The proxy ends its drain before the fleet's SIGKILL would cut it short.
    assert.match(fleet.output(), /drain timed out/);
    for (let port = base; port < base + FLEET_PORTS; port++) {
      assert.equal(await isListening(port), false, `port ${port} still listens after SIGTERM`);
    }
    assert.equal(existsSync(config), false, `${config} is left after the fleet stopped`);
    assert.equal(existsSync(dirname(config)), false, `${dirname(config)} is left behind`);
  });

  test('child exit during start fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-script-'));
    dirs.push(dir);
    const base = await findFreePortRun(FLEET_PORTS);
    // A data directory that is a file makes the control plane exit 1 while it starts.
    const notADirectory = join(dir, 'file');
    writeFileSync(notADirectory, '');
    const fleet = runFleetScript(base, notADirectory);
    const { code } = await exitWithin(fleet, 30_000);
    assert.equal(code, 1, fleet.output());
    assert.match(fleet.output(), /control-plane exited with code 1 during start/);
    assert.match(fleet.output(), new RegExp(`ports ${base}, ${base + 1}`));
    assert.match(fleet.output(), /npm start -- --data-dir DIR/);
    assert.doesNotMatch(fleet.output(), /Loom fleet is running/);
    assert.equal(await isListening(base + 6), false, 'the example upstream was left open');
  });

  test('flags npm took are named', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-script-'));
    dirs.push(dir);
    const base = await findFreePortRun(FLEET_PORTS);
    // npm reads flags before "--" as its own options. A fleet that starts anyway listens on these
    // ports (LOOM_FLEET_BASE_PORT), and the timer kills its detached process group.
    const cases = [
      { args: ['--base-port', String(base)], fix: `npm start -- --base-port ${base}` },
      { args: [`--base-port=${base}`], fix: `npm start -- --base-port ${base}` },
      {
        args: ['--data-dir', join(dir, 'store')],
        fix: `npm start -- --data-dir ${join(dir, 'store')}`,
      },
    ];
    for (const { args, fix } of cases) {
      const child = spawn('npm', ['start', ...args], {
        cwd: ROOT,
        detached: true,
        env: { ...process.env, LOOM_FLEET_BASE_PORT: String(base) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 60_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(timer);
      assert.equal(code, 1, `npm start ${args.join(' ')}:\n${output}`);
      assert.ok(output.includes(fix), `npm start ${args.join(' ')}:\n${output}`);
      assert.doesNotMatch(output, /Loom fleet is running/);
    }
  });

  test('locked data directory names npm syntax', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-script-'));
    dirs.push(dir);
    const base = await findFreePortRun(FLEET_PORTS);
    const dataDir = join(dir, 'store');
    // This test process holds the lock, as another fleet's control plane would.
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'LOCK'), `${process.pid}\n`);

    const fleet = runFleetScript(base, dataDir);
    const { code } = await exitWithin(fleet, 30_000);
    assert.equal(code, 1, fleet.output());
    assert.ok(
      fleet.output().includes(`data directory ${dataDir} is in use by process ${process.pid}`),
      fleet.output(),
    );
    assert.ok(
      fleet.output().includes(`"npm start -- --base-port ${base} --data-dir ${dataDir}-2"`),
      fleet.output(),
    );
    assert.doesNotMatch(fleet.output(), /choose another directory with --data-dir/);
    assert.doesNotMatch(fleet.output(), /Loom fleet is running/);
    assert.equal(await isListening(base), false, 'the control plane port was left open');

    // The control plane itself, as "loom control-plane" users run it, names its own flag.
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const direct = await loom(
      [
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--data-dir',
        dataDir,
      ],
      30_000,
    );
    assert.equal(direct.code, 1, direct.stderr);
    assert.match(direct.stderr, /choose another directory with --data-dir/);
    assert.doesNotMatch(direct.stderr, /npm start/);
  });

  test('help wraps at 80 columns', async () => {
    const result = await runScript('scripts/fleet.ts', ['--help']);
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /^usage: npm start -- /);
    assert.match(result.output, /--base-port N/);
    const longLines = result.output.split('\n').filter((line) => line.length > 80);
    assert.deepEqual(longLines, []);
  });

  test('busy port fails naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-fleet-script-'));
    dirs.push(dir);
    const base = await findFreePortRun(FLEET_PORTS);
    const holder = await listen(base + 1);
    assert.ok(holder, `port ${base + 1} was taken before the test held it`);
    try {
      const fleet = runFleetScript(base, join(dir, 'store'));
      const { code } = await exitWithin(fleet, 30_000);
      assert.equal(code, 1, fleet.output());
      assert.match(fleet.output(), new RegExp(`port ${base + 1} on 127\\.0\\.0\\.1`));
      assert.match(fleet.output(), /npm start -- --base-port \d+/);
      assert.ok(
        !fleet.output().includes(`--base-port ${base}"`),
        `the fix names the busy base port again:\n${fleet.output()}`,
      );
      assert.doesNotMatch(fleet.output(), /Loom fleet is running/);
      assert.equal(await isListening(base), false, 'the control plane port was left open');
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});

describe('echo upstream example', () => {
  function runEcho(args: string[]): Promise<{ code: number | null; output: string }> {
    return runScript('examples/echo-upstream.ts', args);
  }

  test('help prints usage', async () => {
    const result = await runEcho(['--help']);
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /^Usage: node --import tsx examples\/echo-upstream\.ts/);
    assert.match(result.output, /^ {2}--port <port> /m);
  });

  test('unknown option is usage error', async () => {
    const result = await runEcho(['--bogus']);
    assert.equal(result.code, 2, result.output);
    assert.match(result.output, /^error: Unknown option '--bogus'/);
    assert.doesNotMatch(result.output, /ERR_PARSE_ARGS_UNKNOWN_OPTION|\n\s+at /);
  });

  test('invalid port is usage error', async () => {
    const result = await runEcho(['--port', 'abc']);
    assert.equal(result.code, 2, result.output);
    assert.equal(result.output, 'error: invalid --port "abc"; give an integer from 0 to 65535\n');
  });
});
