import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { ROOT, waitFor, waitForPort } from '../../scripts/processes.js';
import { startControlPlaneProcess } from '../helpers/fleet.js';
import { findFreePort } from '../helpers/ports.js';

const run = promisify(execFile);

/** Runs a script of bench/propagation with tsx and returns its standard output. */
async function runScript(script: string, args: string[]): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench/propagation', script), ...args],
    { cwd: ROOT, timeout: 60_000 },
  );
  return stdout;
}

describe('propagation benchmark tools', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-propagation-bench-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('subscribers get a snapshot', async () => {
    const port = await findFreePort();
    const controlPlane = startControlPlaneProcess(dir, { listen: `127.0.0.1:${port}` });
    try {
      await waitForPort('127.0.0.1', port, 30_000);
      const subscribers = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          join(ROOT, 'bench/propagation/subscribers.ts'),
          `127.0.0.1:${port}`,
          '3',
        ],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      subscribers.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      subscribers.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = once(subscribers, 'exit');
      try {
        await waitFor(
          'the subscribers to print ready or exit',
          30_000,
          () => stdout.includes('ready') || subscribers.exitCode !== null,
        );
        assert.equal(stdout, 'ready\n', stderr);
        assert.equal(subscribers.exitCode, null, stderr);
      } finally {
        subscribers.kill('SIGTERM');
        await exited;
      }
    } finally {
      await controlPlane.stop();
    }
  });

  test('proxy-cpu writes change windows', async () => {
    const windows = join(dir, 'windows.json');
    const output = await runScript('proxy-cpu.ts', [
      '--routes',
      '50',
      '--changes',
      '3',
      '--json',
      '--windows',
      windows,
      '--snapshot-cache',
      join(dir, 'snapshot.json'),
    ]);
    const result = JSON.parse(output) as { perChangeMs: number[]; snapshotCache: boolean };
    assert.equal(result.perChangeMs.length, 3);
    assert.equal(result.snapshotCache, true);
    const spans = JSON.parse(readFileSync(windows, 'utf8')) as [number, number][];
    assert.equal(spans.length, 3);
    for (const [start, end] of spans) assert.ok(start <= end, `${start} after ${end}`);
  });

  test('proxy-grpc-cpu measures changes', async () => {
    const output = await runScript('proxy-grpc-cpu.ts', [
      '--routes',
      '20',
      '--changes',
      '2',
      '--gap-ms',
      '0',
      '--json',
    ]);
    const result = JSON.parse(output) as { changes: number; changeCpuMeanMs: number };
    assert.equal(result.changes, 2);
    assert.equal(typeof result.changeCpuMeanMs, 'number');
  });

  test('status-cpu measures status calls', async () => {
    const args = ['--proxies', '5', '--acks', '3', '--calls', '4', '--json'];
    const result = JSON.parse(await runScript('status-cpu.ts', args)) as {
      proxies: number;
      calls: number;
      cpuMsPerCall: number;
    };
    assert.equal(result.proxies, 5);
    assert.equal(result.calls, 4);
    assert.equal(typeof result.cpuMsPerCall, 'number');
  });

  test('profile breakdown counts by component', async () => {
    // Five samples 100 µs apart: two in the router, one in the decoder via a shared helper,
    // one in garbage collection, and one after the window.
    const frame = (functionName: string, url: string) => ({
      functionName,
      url,
      lineNumber: 0,
      scriptId: '0',
      columnNumber: 0,
    });
    const profile = {
      nodes: [
        { id: 1, callFrame: frame('(root)', ''), children: [2, 3, 5] },
        { id: 2, callFrame: frame('insert', 'file:///loom/data-plane/router/path-tree.ts') },
        {
          id: 3,
          callFrame: frame('next', 'file:///loom/data-plane/snapshot-client/snapshot-decoder.ts'),
          children: [4],
        },
        {
          id: 4,
          callFrame: frame('match', 'file:///loom/data-plane/snapshot-client/ordered-matcher.ts'),
        },
        { id: 5, callFrame: frame('(garbage collector)', '') },
      ],
      startTime: 1_000,
      samples: [2, 2, 4, 5, 2],
      timeDeltas: [100, 100, 100, 100, 100],
    };
    const profilePath = join(dir, 'synthetic.cpuprofile');
    const windowsPath = join(dir, 'synthetic.windows');
    writeFileSync(profilePath, JSON.stringify(profile));
    writeFileSync(windowsPath, JSON.stringify([[1_050, 1_450]]));

    const output = await runScript('profile-breakdown.ts', [profilePath, windowsPath, '--json']);
    const result = JSON.parse(output) as {
      totalMsPerChange: number;
      components: { component: string; msPerChange: number }[];
    };
    const byComponent = new Map(result.components.map((row) => [row.component, row.msPerChange]));
    assert.equal(result.totalMsPerChange, 0.4);
    assert.equal(byComponent.get('router build'), 0.2);
    assert.equal(byComponent.get('snapshot decoder'), 0.1);
    assert.equal(byComponent.get('garbage collection'), 0.1);
  });
});
