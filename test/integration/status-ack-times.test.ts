import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { loomctl } from '../helpers/cli.js';
import { writeUsersConfig } from '../helpers/config-file.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

describe('loomctl status ack times', { timeout: 120_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ proxies: 2 });
  });

  after(async () => {
    await fleet.stop();
  });

  test('status json has each ack time', async () => {
    const config = writeUsersConfig(fleet.dir, 'loom.yaml', 9, { users: '/users' });
    const applied = await loomctl(fleet.controlPlane, ['apply', '--wait', '-f', config]);
    assert.equal(applied.code, 0, `${applied.stderr}\n${fleet.logs()}`);

    const result = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
    assert.equal(result.code, 0, result.stderr);
    const status = JSON.parse(result.stdout) as StatusResponse;
    assert.ok(status.version > 0, result.stdout);
    assert.ok(status.versionCommittedAtMs > 0, result.stdout);
    assert.equal(status.proxies.length, 2, result.stdout);
    for (const proxy of status.proxies) {
      assert.equal(proxy.ackedVersion, status.version, `${proxy.id}: ${result.stdout}`);
      assert.ok(proxy.versionAckedAtMs > 0, `${proxy.id}: ${result.stdout}`);
      assert.ok(
        proxy.versionAckedAtMs >= proxy.connectedAtMs,
        `${proxy.id} acked before it connected: ${result.stdout}`,
      );
    }
  });
});
