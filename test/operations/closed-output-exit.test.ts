import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { startLoom, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { exitWithin, startPipedLoom, type PipedLoom } from '../helpers/cli.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';

/** Closes the read ends of the child's stdout and stderr, as a reader that exits does. */
function closeOutput(loom: PipedLoom): void {
  loom.child.stdout?.destroy();
  loom.child.stderr?.destroy();
}

describe('SIGTERM with closed output pipes', () => {
  let dir: string;
  let controlPlane: LoomProcess;
  let controlPlaneAddress: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-closed-output-'));
    const port = await findFreePort();
    controlPlaneAddress = `127.0.0.1:${port}`;
    controlPlane = startLoom(
      'control-plane',
      [
        'control-plane',
        '--listen',
        controlPlaneAddress,
        '--admin-listen',
        `127.0.0.1:${await findFreePort()}`,
        '--data-dir',
        join(dir, 'store'),
      ],
      join(dir, 'control-plane.log'),
    );
    await waitForPort('127.0.0.1', port);
  });

  after(async () => {
    await controlPlane.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startProxy(extraArgs: string[] = []): Promise<{ loom: PipedLoom; port: number }> {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const loom = startPipedLoom([
      'data-plane',
      '--control-plane',
      controlPlaneAddress,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--log-level',
      'debug',
      ...extraArgs,
    ]);
    await waitForPort('127.0.0.1', adminPort);
    return { loom, port };
  }

  // Each case tries three times: whether a pending log line meets the closed pipe at exit
  // depends on how the writes interleave.
  for (let attempt = 1; attempt <= 3; attempt++) {
    it(`proxy exits, attempt ${attempt}`, async () => {
      const { loom } = await startProxy();
      closeOutput(loom);
      loom.child.kill('SIGTERM');
      assert.equal(await exitWithin(loom, 20_000), 0);
    });

    it(`proxy with access log on stdout exits, attempt ${attempt}`, async () => {
      const { loom, port } = await startProxy(['--access-log', 'stdout']);
      closeOutput(loom);
      await httpGet(`http://127.0.0.1:${port}/missing`);
      loom.child.kill('SIGTERM');
      assert.equal(await exitWithin(loom, 20_000), 0);
    });

    it(`control plane exits, attempt ${attempt}`, async () => {
      const [port, adminPort] = [await findFreePort(), await findFreePort()];
      const loom = startPipedLoom([
        'control-plane',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin-listen',
        `127.0.0.1:${adminPort}`,
        '--data-dir',
        join(dir, `store-${attempt}`),
        '--log-level',
        'debug',
      ]);
      await waitForPort('127.0.0.1', port);
      closeOutput(loom);
      loom.child.kill('SIGTERM');
      assert.equal(await exitWithin(loom, 20_000), 0);
    });
  }

  it('proxy writes its last log lines to an open pipe', async () => {
    const { loom, port } = await startProxy(['--access-log', 'stdout']);
    await httpGet(`http://127.0.0.1:${port}/missing`);
    loom.child.kill('SIGTERM');
    assert.equal(await exitWithin(loom, 20_000), 0);
    const lines = loom
      .output()
      .split('\n')
      .filter((line) => line.length > 0);
    assert.ok(
      lines.some((line) => line.includes('"shutting down"')),
      `no shutdown line in:\n${loom.output()}`,
    );
    assert.ok(
      lines.some((line) => line.includes('"/missing"')),
      `no access log line in:\n${loom.output()}`,
    );
  });
});
