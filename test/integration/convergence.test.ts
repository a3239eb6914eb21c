import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { AdminClient } from '../../cli/admin-client.js';
import { startEchoUpstream } from '../../examples/echo-upstream.js';
import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, startProxy, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

/** Route name that the faulty proxy's test-only fault switch rejects. */
const POISON = 'poison';

interface ConfigOptions {
  ports: Record<string, number>;
  /** Upstream of the `moving` route. */
  movingTo?: string;
  /** Upstreams to declare; default all three. */
  upstreams?: string[];
  poison?: boolean;
  extra?: string;
}

function configYaml(options: ConfigOptions): string {
  const upstreams = options.upstreams ?? ['alpha', 'beta', 'gamma'];
  const lines = ['apiVersion: loom/v1', 'upstreams:'];
  for (const name of upstreams) {
    lines.push(
      `  - name: ${name}`,
      '    targets:',
      `      - url: http://127.0.0.1:${options.ports[name]}`,
    );
  }
  lines.push(
    'routes:',
    '  - name: get-user',
    '    hosts: []',
    '    paths: [/users/:id]',
    '    methods: [GET]',
    '    upstream: alpha',
    '  - name: moving',
    '    paths: [/moving/*rest]',
    '    methods: []',
    `    upstream: ${options.movingTo ?? 'beta'}`,
  );
  if (options.poison)
    lines.push(`  - name: ${POISON}`, '    paths: [/poison]', '    upstream: alpha');
  if (options.extra)
    lines.push(
      `  - name: ${options.extra}`,
      `    paths: [/${options.extra}]`,
      '    upstream: alpha',
    );
  return `${lines.join('\n')}\n`;
}

/** GET requests in a loop until stopped: at most 5,000 requests or 60 s. */
function steadyTraffic(urls: string[]) {
  const statuses = new Map<number, number>();
  const upstreams: string[] = [];
  let stopped = false;
  const done = (async () => {
    const deadline = Date.now() + 60_000;
    for (let count = 0; !stopped && count < 5_000 && Date.now() < deadline; count++) {
      const response = await httpGet(urls[count % urls.length]).catch(() => ({
        status: 0,
        body: '',
      }));
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      if (response.status === 200) {
        upstreams.push((JSON.parse(response.body) as { upstream: string }).upstream);
      }
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      return { statuses, upstreams };
    },
  };
}

/** Reads the status in-process; the CLI's own output is checked where it matters. */
async function status(fleet: Fleet): Promise<StatusResponse> {
  const client = new AdminClient(fleet.controlPlane);
  try {
    return await client.status();
  } finally {
    client.close();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const storeKind of ['etcd', 'embedded'] as const) {
  describe(`convergence on the ${storeKind} store`, { timeout: 120_000, concurrency: 1 }, () => {
    let etcd: EtcdProcess | undefined;
    let fleet: Fleet;
    let faulty: LoomProcess;
    let faultyPort: number;
    const servers: Server[] = [];
    const ports: Record<string, number> = {};
    const file = (name: string, text: string) => {
      const path = join(fleet.dir, name);
      writeFileSync(path, text);
      return path;
    };

    before(async () => {
      for (const name of ['alpha', 'beta', 'gamma']) {
        const server = await startEchoUpstream(0, name);
        servers.push(server);
        ports[name] = (server.address() as AddressInfo).port;
      }
      if (storeKind === 'etcd') etcd = await startEtcd();
      fleet = await startFleet({ etcd: etcd?.endpoint, proxies: 2 });

      const proxy = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-faulty', {
        rejectRoute: POISON,
      });
      [faulty, faultyPort] = [proxy.process, proxy.port];
      await waitForPort('127.0.0.1', proxy.adminPort);
      await waitFor('three connected proxies', 30_000, async () => {
        const current = await status(fleet);
        return current.proxies.filter((proxy) => proxy.connected).length === 3;
      }).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}\n${fleet.logs()}`);
      });
    });

    after(async () => {
      await faulty?.stop();
      await fleet?.stop();
      await etcd?.stop();
      for (const server of servers) server.close();
    });

    test('apply --wait reports convergence', async () => {
      const path = file('base.yaml', configYaml({ ports }));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', path, '--wait']);
      assert.equal(result.code, 0, result.stderr + fleet.logs());
      assert.match(result.stdout, /applied by 3 of 3 proxies; convergence p50 \d+ ms, p99 \d+ ms/);
    });

    test('identical apply pushes nothing', async () => {
      const path = file('base.yaml', configYaml({ ports }));
      const before = await status(fleet);
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', path]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^no changes \(version \d+\)$/m);
      await sleep(300);
      const afterApply = await status(fleet);
      assert.equal(afterApply.version, before.version);
      assert.deepEqual(
        afterApply.proxies.map((proxy) => `${proxy.id} ${proxy.snapshotsSent}`),
        before.proxies.map((proxy) => `${proxy.id} ${proxy.snapshotsSent}`),
      );
    });

    test('get output applies without changes', async () => {
      const got = await loomctl(fleet.controlPlane, ['get', '-o', 'yaml']);
      assert.equal(got.code, 0, got.stderr);
      // Explicit empty lists are kept, so the printed config is the stored one.
      assert.match(got.stdout, /hosts: \[\]/);
      assert.match(got.stdout, /methods: \[\]/);
      const path = file('got.yaml', got.stdout.replace(/^(version|epoch):.*$/gm, ''));
      const diff = await loomctl(fleet.controlPlane, ['diff', '-f', path, '--prune']);
      assert.equal(diff.code, 0, diff.stdout + diff.stderr);
      assert.match(diff.stdout, /no changes/);
    });

    test('diff shows fields and exits 2', async () => {
      const path = file('moved.yaml', configYaml({ ports, movingTo: 'gamma' }));
      const diff = await loomctl(fleet.controlPlane, ['diff', '-f', path]);
      assert.equal(diff.code, 2, diff.stderr);
      assert.match(diff.stdout, /^~ route\/moving$/m);
      assert.match(diff.stdout, /^ {4}upstream: "beta" -> "gamma"$/m);
      assert.match(diff.stdout, /0 to create, 1 to update, 0 to delete/);
    });

    test('nacked version is not re-sent', async () => {
      const traffic = steadyTraffic(fleet.proxies.map((proxy) => proxy.url('/users/1')));
      try {
        const poisoned = file('poisoned.yaml', configYaml({ ports, poison: true }));
        const result = await loomctl(fleet.controlPlane, [
          'apply',
          '-f',
          poisoned,
          '--wait',
          '--timeout',
          '10s',
        ]);
        assert.equal(result.code, 3, result.stdout + result.stderr);
        assert.match(result.stdout, /applied by 2 of 3 proxies/);
        assert.match(
          result.stderr,
          /proxy proxy-faulty nacked version \d+: .*poison.*LOOM_FAULT_REJECT_ROUTE/,
        );
        assert.match(result.stderr, /restart that proxy/);

        const nacked = await status(fleet);
        const record = nacked.proxies.find((proxy) => proxy.id === 'proxy-faulty');
        assert.equal(record?.nackedVersion, nacked.version);
        assert.ok((record?.ackedVersion ?? 0) < nacked.version);
        // Over a window with traffic and no new version, nothing more is sent to it.
        await sleep(1_000);
        const later = await status(fleet);
        const laterRecord = later.proxies.find((proxy) => proxy.id === 'proxy-faulty');
        assert.equal(later.version, nacked.version);
        assert.equal(laterRecord?.snapshotsSent, record?.snapshotsSent);
        assert.equal((await httpGet(`http://127.0.0.1:${faultyPort}/users/2`)).status, 200);

        const fixed = file('fixed.yaml', configYaml({ ports }));
        const repaired = await loomctl(fleet.controlPlane, [
          'apply',
          '-f',
          fixed,
          '--prune',
          '--wait',
          '--timeout',
          '10s',
        ]);
        assert.equal(repaired.code, 0, repaired.stdout + repaired.stderr);
        assert.match(repaired.stdout, /route\/poison deleted/);
        assert.match(repaired.stdout, /applied by 3 of 3 proxies/);
      } finally {
        const { statuses } = await traffic.stop();
        assert.deepEqual([...statuses.keys()], [200], JSON.stringify([...statuses]));
      }
    });

    test('concurrent if-version applies: one wins', async () => {
      const current = await status(fleet);
      const version = String(current.version);
      const first = file('first.yaml', configYaml({ ports, extra: 'first' }));
      const second = file('second.yaml', configYaml({ ports, extra: 'second' }));
      const results = await Promise.all([
        loomctl(fleet.controlPlane, ['apply', '-f', first, '--if-version', version]),
        loomctl(fleet.controlPlane, ['apply', '-f', second, '--if-version', version]),
      ]);
      const codes = results.map((result) => result.code).sort();
      assert.deepEqual(codes, [0, 1], JSON.stringify(results));
      const loser = results.find((result) => result.code === 1);
      assert.match(
        loser?.stderr ?? '',
        new RegExp(
          `version conflict: expected the configuration at version ${version}, .*now at version \\d+`,
        ),
      );

      const stale = await loomctl(fleet.controlPlane, [
        'apply',
        '-f',
        first,
        '--if-version',
        version,
      ]);
      assert.equal(stale.code, 1);
      const ahead = await loomctl(fleet.controlPlane, [
        'apply',
        '-f',
        first,
        '--if-version',
        '999999',
      ]);
      assert.equal(ahead.code, 1);
      assert.match(ahead.stderr, /ahead of the store/);
    });

    test('move and removal land in one version', async () => {
      const traffic = steadyTraffic(fleet.proxies.map((proxy) => proxy.url('/moving/a')));
      try {
        await sleep(200);
        const before = await status(fleet);
        const moved = file(
          'moved.yaml',
          configYaml({ ports, movingTo: 'gamma', upstreams: ['alpha', 'gamma'] }),
        );
        const result = await loomctl(fleet.controlPlane, [
          'apply',
          '-f',
          moved,
          '--prune',
          '--wait',
        ]);
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.match(result.stdout, /route\/moving configured/);
        assert.match(result.stdout, /upstream\/beta deleted/);
        const afterApply = await status(fleet);
        // One transaction, so one new version: no proxy ever gets the route without its
        // upstream. etcd's revision also moves when a control plane records the accepted
        // version, so the check counts the snapshots sent to each proxy instead.
        assert.equal(afterApply.version, Number(/^version (\d+)$/m.exec(result.stdout)?.[1]));
        for (const { id } of fleet.proxies) {
          const sent = (response: typeof before) =>
            response.proxies.find((proxy) => proxy.id === id)?.snapshotsSent ?? 0;
          assert.equal(sent(afterApply), sent(before) + 1, id);
        }
        await sleep(300);
      } finally {
        const { statuses, upstreams } = await traffic.stop();
        assert.deepEqual([...statuses.keys()], [200], JSON.stringify([...statuses]));
        assert.equal(upstreams.at(-1), 'gamma');
        assert.ok(upstreams.includes('beta'));
      }
    });

    test('removing a used upstream names the route', async () => {
      const path = file(
        'no-alpha.yaml',
        configYaml({ ports, movingTo: 'gamma', upstreams: ['gamma'] }),
      );
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', path, '--prune']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /route "get-user" upstream: unknown upstream/);
      const deleted = await loomctl(fleet.controlPlane, ['delete', 'upstream', 'alpha']);
      assert.equal(deleted.code, 1);
      assert.match(deleted.stderr, /upstream "alpha" is used by route\(s\) "get-user"/);
    });
  });
}
