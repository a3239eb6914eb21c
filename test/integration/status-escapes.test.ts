import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';

import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

/** An address that sets the terminal's title and a nack error that clears the screen. */
const HOSTILE_ADDRESS = '127.0.0.1:1\u001b]0;owned\u0007';
const HOSTILE_ERROR = 'rejected\u001b[2J\nsecond line\u009b31m';

/** The fields of `loomctl status -o json` that these tests read. */
interface ProxyFields {
  id: string;
  address: string;
  nackError: string;
}

const ESCAPE_OR_BELL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

describe('status with hostile proxy values', { timeout: 60_000 }, () => {
  let fleet: Fleet;
  let client: SnapshotClient;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    const file = join(fleet.dir, 'config.yaml');
    writeFileSync(
      file,
      'upstreams:\n  - name: users\n    targets: [{url: "http://127.0.0.1:9001"}]\n',
    );
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    assert.equal(applied.code, 0, applied.stderr);

    // A snapshot client as a proxy runs it, which nacks every snapshot with HOSTILE_ERROR.
    client = new SnapshotClient({
      addresses: [fleet.controlPlane],
      proxyId: 'hostile',
      proxyAddress: HOSTILE_ADDRESS,
      logger: pino({ enabled: false }),
      held: () => ({ epoch: '', version: 0 }),
      apply: () => Promise.reject(new Error(HOSTILE_ERROR)),
    });
    client.start();
    await waitFor('nack of version 1', 20_000, async () => {
      const status = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
      return status.stdout.includes('"nackedVersion": 1');
    });
  });

  after(async () => {
    client?.stop();
    await fleet?.stop();
  });

  test('table escapes control characters', async () => {
    const status = await loomctl(fleet.controlPlane, ['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.doesNotMatch(status.stdout, ESCAPE_OR_BELL);

    const lines = status.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3, status.stdout);
    assert.ok(lines[2].startsWith('hostile  127.0.0.1:1\\u001b]0;owned\\u0007  '), lines[2]);
    assert.ok(
      lines[2].includes('1: rejected\\u001b[2J\\nsecond line\\u009b31m'),
      `nack cell: ${lines[2]}`,
    );
  });

  test('long nack error is cut', async () => {
    const verbose = new SnapshotClient({
      addresses: [fleet.controlPlane],
      proxyId: 'verbose',
      proxyAddress: '127.0.0.1:2',
      logger: pino({ enabled: false }),
      held: () => ({ epoch: '', version: 0 }),
      apply: () =>
        Promise.reject(new Error(`upstream "x" tls.caFile: cannot read\n`.repeat(30_000))),
    });
    verbose.start();
    try {
      let nackError = '';
      await waitFor('nack of the verbose proxy', 20_000, async () => {
        const status = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
        const proxies = (JSON.parse(status.stdout) as { proxies: ProxyFields[] }).proxies;
        nackError = proxies.find((item) => item.id === 'verbose')?.nackError ?? '';
        return nackError !== '';
      });
      assert.equal(nackError.length, 1_024);
      assert.ok(nackError.endsWith('...'), nackError.slice(-20));
      const longest = Math.max(
        ...fleet
          .logs()
          .split('\n')
          .map((line) => line.length),
      );
      assert.ok(longest < 4_096, `a log line has ${longest} characters`);
    } finally {
      verbose.stop();
    }
  });

  test('json keeps values exact', async () => {
    const status = await loomctl(fleet.controlPlane, ['status', '-o', 'json']);
    assert.equal(status.code, 0, status.stderr);
    const proxies = (JSON.parse(status.stdout) as { proxies: ProxyFields[] }).proxies;
    const proxy = proxies.find((item) => item.id === 'hostile');
    assert.equal(proxy?.address, HOSTILE_ADDRESS);
    assert.equal(proxy?.nackError, HOSTILE_ERROR);
  });
});
