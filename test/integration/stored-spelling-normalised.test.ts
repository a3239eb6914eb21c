import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';

import { AdminClient } from '../../cli/admin-client.js';
import { createLogger } from '../../common/logger.js';
import { parseConfigTexts } from '../../config/load.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { resourceKey, type ResourceKind } from '../../control-plane/resources.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { waitFor } from '../../scripts/processes.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';

/** The upstream every route case names, applied before the cases run. */
const BASE = 'upstreams:\n  - {name: u, targets: [{url: "http://127.0.0.1:9"}]}\n';

/** A resource written straight into the store in another spelling of the file's stored form. */
interface SpellingCase {
  name: string;
  kind: ResourceKind;
  /** YAML of the resource as an operator applies it, under `routes:` or `upstreams:`. */
  declared: string;
  /** The stored value, as etcdctl or an older release may have written it. */
  stored: Record<string, unknown>;
  /** Top-level fields that the control plane logs as spelled differently. */
  respelled: string[];
}

const CASES: SpellingCase[] = [
  {
    name: 'methods',
    kind: 'route',
    declared: '{name: methods, paths: [/methods], methods: [GET, POST], upstream: u}',
    stored: {
      name: 'methods',
      paths: ['/methods'],
      methods: ['post', 'get', 'GET'],
      upstream: 'u',
    },
    respelled: ['hosts', 'methods'],
  },
  {
    name: 'hosts',
    kind: 'route',
    declared: '{name: hosts, hosts: [api.example.com], paths: [/hosts], upstream: u}',
    stored: {
      name: 'hosts',
      hosts: ['API.Example.COM.', 'api.example.com'],
      paths: ['/hosts'],
      methods: [],
      upstream: 'u',
    },
    respelled: ['hosts'],
  },
  {
    name: 'path-escapes',
    kind: 'route',
    declared: '{name: path-escapes, paths: [/escapes/a, "/~escapes/b%2F"], upstream: u}',
    stored: {
      name: 'path-escapes',
      hosts: [],
      paths: ['/%7eescapes/b%2f', '/escapes/a', '/escapes/a'],
      methods: [],
      upstream: 'u',
    },
    respelled: ['paths'],
  },
  {
    name: 'prefixes',
    kind: 'route',
    declared: '{name: prefixes, paths: [/rawr/x], stripPrefix: /rawr, upstream: u}',
    stored: {
      name: 'prefixes',
      hosts: [],
      paths: ['/rawr/x'],
      methods: [],
      upstream: 'u',
      stripPrefix: '/rawr/',
      addPrefix: '/',
    },
    respelled: ['addPrefix', 'stripPrefix'],
  },
  {
    name: 'headers',
    kind: 'route',
    declared:
      '{name: headers, paths: [/headers], upstream: u, hostRewrite: internal.example:8080, ' +
      'requestHeaders: {set: {x-tag: v}, remove: [x-secret]}}',
    stored: {
      name: 'headers',
      hosts: [],
      paths: ['/headers'],
      methods: [],
      upstream: 'u',
      hostRewrite: 'Internal.Example:8080',
      requestHeaders: { set: [{ name: 'X-Tag', value: 'v' }], remove: ['X-Secret', 'x-secret'] },
      responseHeaders: { set: [], remove: [] },
    },
    respelled: ['hostRewrite', 'requestHeaders', 'responseHeaders'],
  },
  {
    name: 'defaults',
    kind: 'route',
    declared: '{name: defaults, paths: [/defaults], upstream: u}',
    stored: {
      name: 'defaults',
      hosts: [],
      paths: ['/defaults'],
      methods: [],
      upstream: 'u',
      timeouts: { connectMs: 0, responseHeaderMs: 0, idleBodyMs: 0 },
      retries: 0,
    },
    respelled: ['retries', 'timeouts'],
  },
  {
    name: 'key-name',
    kind: 'route',
    declared: '{name: key-name, paths: [/key-name], upstream: u}',
    stored: {
      name: 'another-name',
      hosts: [],
      paths: ['/key-name'],
      methods: [],
      upstream: 'u',
      comment: 'a field Loom does not know',
    },
    respelled: ['comment', 'name'],
  },
  {
    name: 'targets',
    kind: 'upstream',
    declared:
      '{name: targets, targets: [{url: "http://target-b.example"}, ' +
      '{url: "http://target-a.example:8080", weight: 3}]}',
    stored: {
      name: 'targets',
      targets: [
        { url: 'HTTP://Target-B.Example:80/' },
        { url: 'http://target-a.example:8080', weight: 3 },
      ],
      balancer: 'round-robin',
    },
    respelled: ['balancer', 'targets'],
  },
  {
    name: 'hash-on',
    kind: 'upstream',
    declared:
      '{name: hash-on, targets: [{url: "http://127.0.0.1:9"}], balancer: hash, hashOn: "header:x-user"}',
    stored: {
      name: 'hash-on',
      targets: [{ url: 'http://127.0.0.1:9', weight: 1 }],
      balancer: 'hash',
      hashOn: 'Header:X-User',
    },
    respelled: ['hashOn'],
  },
];

/** Returns the case's resource as loomctl sends it: read from YAML and in stored form. */
function declaredResource(spelling: SpellingCase): { routes: Route[]; upstreams: Upstream[] } {
  const list = spelling.kind === 'route' ? 'routes' : 'upstreams';
  const text = `${BASE}${list === 'routes' ? 'routes:\n' : ''}  - ${spelling.declared}\n`;
  const declared = parseConfigTexts([{ file: `${spelling.name}.yaml`, text }]);
  return {
    routes: declared.routes,
    upstreams: declared.upstreams.filter((upstream) => upstream.name !== 'u'),
  };
}

/** Returns the control plane's JSON log lines with message `msg` and key `key`. */
function logLines(lines: string[], msg: string, key: string): Record<string, unknown>[] {
  return lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => entry.msg === msg && entry.key === key);
}

for (const storeKind of ['etcd', 'embedded'] as const) {
  describe(`stored spellings on ${storeKind}`, { timeout: 120_000, concurrency: 1 }, () => {
    let etcd: EtcdProcess | undefined;
    let dir: string;
    let controlPlane: ControlPlane;
    let admin: AdminClient;
    const logs: string[] = [];

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'loom-spelling-'));
      if (storeKind === 'etcd') etcd = await startEtcd();
      const destination = new PassThrough();
      let pending = '';
      destination.on('data', (chunk: Buffer) => {
        const lines = (pending + chunk.toString('utf8')).split('\n');
        pending = lines.pop() ?? '';
        logs.push(...lines.filter((line) => line !== ''));
      });
      controlPlane = await ControlPlane.start({
        listen: '127.0.0.1:0',
        etcdEndpoints: etcd === undefined ? [] : [etcd.endpoint],
        dataDir: join(dir, 'store'),
        logger: createLogger({ name: 'test', level: 'info', destination }),
      });
      admin = new AdminClient(`127.0.0.1:${controlPlane.port}`);
      const base = parseConfigTexts([{ file: 'base.yaml', text: BASE }]);
      await admin.apply({ ...base, prune: false, dryRun: false, includeValues: false });
    });

    after(async () => {
      admin?.close();
      await controlPlane?.stop();
      await etcd?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    /** Commits `value` at the case's key straight into the store and waits until it is served. */
    async function putStored(kind: ResourceKind, name: string, value: string): Promise<number> {
      const key = resourceKey('/loom/', kind, name);
      const revision = await controlPlane.store.commit([{ type: 'put', key, value }]);
      await waitFor(`snapshot of revision ${revision}`, 15_000, () => {
        return (controlPlane.cache.current?.snapshot.version ?? 0) >= revision;
      });
      return revision;
    }

    for (const spelling of CASES) {
      test(`${spelling.kind} ${spelling.name} served in stored form`, async () => {
        const key = resourceKey('/loom/', spelling.kind, spelling.name);
        const declared = declaredResource(spelling);
        const expected = spelling.kind === 'route' ? declared.routes[0] : declared.upstreams[0];
        assert.ok(expected, `case ${spelling.name} declares no ${spelling.kind}`);

        const revision = await putStored(
          spelling.kind,
          spelling.name,
          JSON.stringify(spelling.stored),
        );
        try {
          const snapshot = controlPlane.cache.current!.snapshot;
          const served: { name: string }[] =
            spelling.kind === 'route' ? snapshot.routes : snapshot.upstreams;
          assert.deepEqual(
            served.find((resource) => resource.name === spelling.name),
            expected,
          );

          const stored = await admin.getConfig();
          const listed: { name: string }[] =
            spelling.kind === 'route' ? stored.routes : stored.upstreams;
          // The gRPC client sets every optional field, so unset ones are dropped before comparing.
          const got = listed.find((resource) => resource.name === spelling.name);
          assert.deepEqual(JSON.parse(JSON.stringify(got)), expected);

          const diff = await admin.apply({
            ...declared,
            prune: false,
            dryRun: true,
            includeValues: true,
          });
          assert.deepEqual(diff.changes, []);

          const lines = logLines(logs, 'stored value served in stored form', key);
          assert.equal(lines.length, 1, logs.join('\n'));
          assert.deepEqual(lines[0]?.fields, spelling.respelled);
          assert.equal(lines[0]?.modRevision, revision);
        } finally {
          await controlPlane.store.commit([{ type: 'delete', key }]);
        }
      });
    }

    test('stored form logs nothing', async () => {
      const key = resourceKey('/loom/', 'route', 'plain');
      const declared = declaredResource({
        name: 'plain',
        kind: 'route',
        declared: '{name: plain, paths: [/plain], upstream: u}',
        stored: {},
        respelled: [],
      });
      const applied = await admin.apply({
        ...declared,
        prune: false,
        dryRun: false,
        includeValues: false,
      });
      await waitFor(`snapshot of version ${applied.version}`, 15_000, () => {
        return (controlPlane.cache.current?.snapshot.version ?? 0) >= applied.version;
      });
      assert.deepEqual(logLines(logs, 'stored value served in stored form', key), []);
      assert.deepEqual(logLines(logs, 'stored value invalid', key), []);
    });

    test('unreadable stored value is logged once', async () => {
      const key = resourceKey('/loom/', 'route', 'unreadable');
      await controlPlane.store.commit([{ type: 'put', key, value: '{"name": "unreadable",' }]);
      try {
        await waitFor('the skipped value to be logged', 15_000, () => {
          return logLines(logs, 'stored value skipped', key).length > 0;
        });
        // Reads for loomctl report the key to their caller, so they add no log line.
        await admin.getConfig();
        await admin.getConfig();
        const lines = logLines(logs, 'stored value skipped', key);
        assert.equal(lines.length, 1, logs.join('\n'));
        assert.equal(lines[0]?.level, 40);
        assert.match(String(lines[0]?.reason), /JSON/);
        assert.equal(
          lines[0]?.fix,
          'apply route "unreadable" with loomctl, or run "loomctl delete route unreadable"',
        );
        assert.equal(lines[0]?.err, undefined);
      } finally {
        await controlPlane.store.commit([{ type: 'delete', key }]);
      }
    });

    test('invalid stored route is logged', async () => {
      const key = resourceKey('/loom/', 'route', 'invalid');
      const value = JSON.stringify({
        name: 'invalid',
        hosts: [],
        paths: ['/invalid'],
        methods: ['g et'],
        upstream: 'u',
      });
      await putStored('route', 'invalid', value);
      try {
        // The control plane keeps following the store; proxies reject a snapshot they cannot build.
        assert.equal(controlPlane.cache.state, 'watching');
        const lines = logLines(logs, 'stored value invalid', key);
        assert.equal(lines.length, 1, logs.join('\n'));
        assert.equal(lines[0]?.level, 40);
        assert.deepEqual(lines[0]?.fields, ['methods']);
        assert.deepEqual(lines[0]?.issues, [
          'route "invalid" methods[0]: invalid method; use a token such as GET or POST (got "G ET")',
        ]);
        assert.equal(
          lines[0]?.fix,
          'apply a fixed route "invalid" with loomctl, or run "loomctl delete route invalid"',
        );
      } finally {
        await controlPlane.store.commit([{ type: 'delete', key }]);
      }
    });
  });
}
