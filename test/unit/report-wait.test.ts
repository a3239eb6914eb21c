import assert from 'node:assert/strict';
import { describe, mock, test } from 'node:test';

import { reportWait } from '../../cli/commands/apply.js';
import { EXIT, ExitError } from '../../cli/context.js';
import type { WaitResult } from '../../cli/wait.js';

/** Runs `reportWait` with standard output and error captured. */
function report(result: WaitResult): { stdout: string; stderr: string; error: unknown } {
  const stdout = mock.method(process.stdout, 'write', () => true);
  const stderr = mock.method(process.stderr, 'write', () => true);
  let error: unknown;
  try {
    reportWait(result, 30_000);
  } catch (caught) {
    error = caught;
  } finally {
    stdout.mock.restore();
    stderr.mock.restore();
  }
  const text = (calls: typeof stdout.mock.calls) => calls.map((call) => call.arguments[0]).join('');
  return { stdout: text(stdout.mock.calls), stderr: text(stderr.mock.calls), error };
}

describe('apply wait report', () => {
  const applied: WaitResult = {
    epoch: 'e',
    version: 7,
    proxies: [{ id: 'p1', state: 'applied', convergenceMs: 4 }],
    disconnected: [],
    settled: true,
  };

  test('every proxy applied exits 0', () => {
    const { stdout, error } = report(applied);
    assert.equal(error, undefined);
    assert.match(stdout, /version 7 applied by 1 of 1 proxies; convergence p50 4 ms/);
  });

  test('unread replicas fail the wait', () => {
    const { stderr, error } = report({
      ...applied,
      settled: false,
      fleetError: 'etcd at http://127.0.0.1:2379 is unreachable',
    });
    assert.ok(error instanceof ExitError);
    assert.equal(error.exitCode, EXIT.notConverged);
    assert.match(stderr, /proxies of other control planes could not be read: etcd at/);
  });

  test('unread replicas with no local proxy fail too', () => {
    const { stdout, error } = report({
      ...applied,
      proxies: [],
      settled: false,
      fleetError: 'etcd at http://127.0.0.1:2379 is unreachable',
    });
    assert.ok(error instanceof ExitError);
    assert.doesNotMatch(stdout, /nothing to wait for/);
  });
});
