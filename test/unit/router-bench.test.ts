import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { ROOT } from '../../scripts/processes.js';

/** Runs bench/router/run.ts with `args` and `env`, and returns its exit code and output. */
function runBench(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'bench/router/run.ts'), ...args],
      { cwd: ROOT, timeout: 60_000, env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        let code: number | null = 0;
        if (error !== null) code = typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

interface BenchReport {
  rows: { router: string; table: string; staticNs: number | null; paramsNs: number | null }[];
  failures: { router: string; table: string; kind: string; round: number; error: string }[];
}

describe('router benchmark runner', () => {
  test('failed measurement keeps the others', async () => {
    const run = await runBench(
      ['--json', '--tables', '10', '--routers', 'loom', '--kinds', 'static,params'],
      { LOOM_FAULT_BENCH_FAIL: 'loom/10/params' },
    );
    assert.equal(run.code, 1, run.stderr);
    const report = JSON.parse(run.stdout) as BenchReport;
    assert.equal(report.rows.length, 1);
    assert.equal(typeof report.rows[0].staticNs, 'number');
    assert.equal(report.rows[0].paramsNs, null);
    assert.equal(report.failures.length, 1);
    const failure = report.failures[0];
    assert.deepEqual(
      { router: failure.router, table: failure.table, kind: failure.kind, round: failure.round },
      { router: 'loom', table: '10', kind: 'params', round: 1 },
    );
    assert.match(failure.error, /^exited with 1: Error: .*LOOM_FAULT_BENCH_FAIL/);
  });

  test('timed-out measurement is marked failed', async () => {
    const run = await runBench(
      ['--tables', '10', '--routers', 'loom', '--kinds', 'static', '--timeout', '1'],
      { LOOM_FAULT_BENCH_HANG: 'loom/10/static' },
    );
    assert.equal(run.code, 1, run.stderr);
    const row = run.stdout.split('\n').find((line) => line.startsWith('| 10 | loom |'));
    assert.equal(row, '| 10 | loom | failed | - | - | - | - | - |');
    assert.match(run.stdout, /^- loom 10 static \(round 1\): timed out after 1000 ms$/m);
    assert.match(run.stderr, /FAILED loom 10 static: timed out after 1000 ms/);
  });
});
