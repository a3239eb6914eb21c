import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';
import { parse } from 'yaml';

import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfigText, loomctl } from '../helpers/cli.js';
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
    await applyConfigText(
      fleet.controlPlane,
      fleet.dir,
      'config.yaml',
      'upstreams:\n  - name: users\n    targets: [{url: "http://127.0.0.1:9001"}]\n',
    );

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

/**
 * Stored values with a CSI (U+009B) and a next-line character (U+0085) in a header value, which
 * may contain Latin-1 characters. The CA file path, where the validator rejects only C0 controls
 * and DEL, has a right-to-left override, a zero-width space and a tag character.
 */
const HOSTILE_HEADER = 'a\u009b2Jb\u0085c';
const HOSTILE_CA_FILE = '/etc/ca\u202egnp.pem\u200b\u{e0041}';
const HOSTILE_CONFIG = `upstreams:
  - name: hostile
    targets: [{url: "http://127.0.0.1:9001"}]
    tls: {caFile: ${JSON.stringify(HOSTILE_CA_FILE)}}
routes:
  - name: hostile
    paths: [/hostile]
    upstream: hostile
    requestHeaders:
      set: {x-hostile: ${JSON.stringify(HOSTILE_HEADER)}}
`;

/** The fields of `loomctl get -o json|yaml` that these tests read. */
interface StoredDocument {
  routes?: { requestHeaders: { set: { name: string; value: string }[] } }[];
  upstreams?: { tls: { caFile: string } }[];
}

describe('get with hostile stored values', { timeout: 60_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ proxies: 0 });
    await applyConfigText(fleet.controlPlane, fleet.dir, 'hostile.yaml', HOSTILE_CONFIG);
  });

  after(async () => {
    await fleet?.stop();
  });

  test('json and yaml escape values', async () => {
    const [routes, upstreams] = await Promise.all([
      loomctl(fleet.controlPlane, ['get', 'routes', '-o', 'json']),
      loomctl(fleet.controlPlane, ['get', 'upstreams', '-o', 'yaml']),
    ]);
    assert.equal(routes.code, 0, routes.stderr);
    assert.equal(upstreams.code, 0, upstreams.stderr);
    for (const output of [routes.stdout, upstreams.stdout]) {
      assert.doesNotMatch(output, ESCAPE_OR_BELL);
      assert.doesNotMatch(output, BIDI_OR_INVISIBLE);
    }

    const json = JSON.parse(routes.stdout) as StoredDocument;
    const yaml = parse(upstreams.stdout) as StoredDocument;
    assert.equal(json.routes?.[0].requestHeaders.set[0].value, HOSTILE_HEADER);
    assert.equal(yaml.upstreams?.[0].tls.caFile, HOSTILE_CA_FILE);
  });

  test('yaml applies back without changes', async () => {
    const whole = await loomctl(fleet.controlPlane, ['get', '-o', 'yaml']);
    assert.equal(whole.code, 0, whole.stderr);
    assert.doesNotMatch(whole.stdout, ESCAPE_OR_BELL);
    assert.doesNotMatch(whole.stdout, BIDI_OR_INVISIBLE);

    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', '-'], whole.stdout);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /^no changes \(version \d+\)$/m);
  });
});
