import assert from 'node:assert/strict';

import { waitFor } from '../../scripts/processes.js';
import { loomctl } from './cli.js';
import { writeUsersConfig } from './config-file.js';
import type { Fleet, FleetProxy } from './fleet.js';
import { rejectedSnapshots } from './fleet-status.js';

/**
 * Applies a configuration with route `a` and waits until every proxy acked it, then applies one
 * that adds route `poison` and waits until `proxy`, started with `rejectRoute: 'poison'`, nacked
 * that version. Both route to the upstream on `upstreamPort`.
 */
export async function applyPoisonedVersion(
  fleet: Fleet,
  proxy: FleetProxy,
  upstreamPort: number,
): Promise<void> {
  const good = writeUsersConfig(fleet.dir, 'good.yaml', upstreamPort, { a: '/a' });
  const applied = await loomctl(fleet.controlPlane, ['apply', '-f', good, '--wait']);
  assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());
  const bad = writeUsersConfig(fleet.dir, 'bad.yaml', upstreamPort, { a: '/a', poison: '/p' });
  const second = await loomctl(fleet.controlPlane, ['apply', '-f', bad]);
  assert.equal(second.code, 0, second.stdout + second.stderr);
  await waitFor(`${proxy.id} to nack the poisoned version`, 15_000, async () => {
    return (await rejectedSnapshots(proxy)) === 1;
  });
}
