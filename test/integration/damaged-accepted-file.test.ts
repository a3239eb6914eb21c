import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { EmbeddedStore } from '../../control-plane/store/embedded-store.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { exitWithin, loomctl, startPipedLoom } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

describe('control plane with damaged accepted.json', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-damaged-accepted-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('starts and warns without rebuild advice', async () => {
    const dataDir = join(dir, 'store');
    const store = await EmbeddedStore.open({ dataDir });
    const epoch = await store.epoch();
    const version = await store.commit([{ type: 'put', key: '/loom/routes/a', value: '1' }]);
    const content = Buffer.from('routes');
    const hash = createHash('sha256').update(content).digest('hex');
    await store.recordAccepted({ epoch, version, hash }, content);
    await store.close();
    const file = join(dataDir, 'accepted.json');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"version"', '"versiom"'));

    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const loom = startPipedLoom([
      'control-plane',
      '--listen',
      `127.0.0.1:${port}`,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--data-dir',
      dataDir,
    ]);
    try {
      await waitForPort('127.0.0.1', port);
      await waitFor('the skipped-file warning', 10_000, async () =>
        loom.output().includes('accepted snapshot file skipped'),
      );
      const line = loom
        .output()
        .split('\n')
        .find((text) => text.includes('accepted snapshot file skipped')) as string;
      const record = JSON.parse(line) as { level: number; err: { message: string } };
      assert.equal(record.level, 40, line);
      assert.match(record.err.message, /accepted\.json is corrupt: /);
      assert.match(record.err.message, /replaces it when it records the next accepted version/);
      assert.doesNotMatch(record.err.message, /aside|apply the configuration files again/);

      const status = await loomctl(`127.0.0.1:${port}`, ['get', '-o', 'json']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { version: number }).version, version);
    } finally {
      loom.child.kill('SIGTERM');
      await exitWithin(loom, 20_000);
    }
  });
});
