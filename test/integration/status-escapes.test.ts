import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';

import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

/**
 * A proxy id that reverses the text after it, and a nack error that clears the screen and
 * hides text behind a bidirectional override, a zero-width space and a tag character.
 */
const HOSTILE_ID = 'hostile\u202e\u2066';
const HOSTILE_ERROR = 'rejected\u001b[2J\nsecond line\u009b31m \u202egnp.exe\u200b\u{e0041}';

/** The fields of `loomctl status -o json` that these tests read. */
interface ProxyFields {
  id: string;
  address: string;
  nackError: string;
}

const ESCAPE_OR_BELL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const BIDI_OR_INVISIBLE = /[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\u{e0000}-\u{e007f}]/u;

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
      proxyId: HOSTILE_ID,
      proxyAddress: '127.0.0.1:1',
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
    assert.doesNotMatch(status.stdout, BIDI_OR_INVISIBLE);

    const lines = status.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3, status.stdout);
    assert.ok(lines[2].startsWith('hostile\\u202e\\u2066  127.0.0.1:1  '), lines[2]);
    assert.ok(
      lines[2].includes(
        '1: rejected\\u001b[2J\\nsecond line\\u009b31m \\u202egnp.exe\\u200b\\udb40\\udc41',
      ),
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
    assert.doesNotMatch(status.stdout, BIDI_OR_INVISIBLE);
    const proxies = (JSON.parse(status.stdout) as { proxies: ProxyFields[] }).proxies;
    const proxy = proxies.find((item) => item.id === HOSTILE_ID);
    assert.equal(proxy?.address, '127.0.0.1:1');
    assert.equal(proxy?.nackError, HOSTILE_ERROR);
  });

  test('error names escape bidi characters', async () => {
    const result = await loomctl(fleet.controlPlane, ['get', 'route', 'users\u202e\u200b']);

    assert.equal(result.code, 1, result.stderr);
    assert.doesNotMatch(result.stderr, BIDI_OR_INVISIBLE);
    assert.match(result.stderr, /users\\u202e\\u200b/);
  });
});
