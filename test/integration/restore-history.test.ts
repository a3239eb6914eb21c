import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Etcd3 } from 'etcd3';

import { AdminClient } from '../../cli/admin-client.js';
import { DEFAULT_PREFIX, decodeRoute, parseResourceKey } from '../../control-plane/resources.js';
import { EtcdStore } from '../../control-plane/store/etcd-store.js';
import { startEchoUpstream } from '../../examples/echo-upstream.js';
import type { StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { TcpRelay } from '../faults/relay.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';

/** Every route name the tests ever apply; each route `name` serves the path `/name`. */
const ROUTE_NAMES = ['u', 'after', 'second'];
const CONVERGE_MS = 20_000;

interface Started {
  process: LoomProcess;
  log: string;
}

interface ControlPlaneProcess extends Started {
  address: string;
}

interface ProxyProcess extends Started {
  id: string;
  port: number;
}

/** Routes and epoch as a new client reads them from etcd. */
interface EtcdView {
  epoch: string;
  /** Upstream name of each route. */
  routes: Map<string, string>;
}

function configYaml(ports: Record<string, number>, routes: Record<string, string>): string {
  const routeLines = Object.entries(routes).map(
    ([name, upstream]) => `  - name: ${name}\n    paths: [/${name}]\n    upstream: ${upstream}\n`,
  );
  return `apiVersion: loom/v1
upstreams:
  - name: ua
    targets: [{url: "http://127.0.0.1:${ports.ua}"}]
  - name: ub
    targets: [{url: "http://127.0.0.1:${ports.ub}"}]
routes:
${routeLines.join('')}`;
}

async function servedUpstream(proxy: ProxyProcess, name: string): Promise<string> {
  const response = await httpGet(`http://127.0.0.1:${proxy.port}/${name}`);
  if (response.status !== 200) return `status ${response.status}`;
  return (JSON.parse(response.body) as { upstream: string }).upstream;
}

describe('etcd history restarted while disconnected', { timeout: 120_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let relay: TcpRelay;
  let foreign: Etcd3;
  let dir: string;
  let relayed: ControlPlaneProcess;
  let direct: { controlPlane: ControlPlaneProcess; proxy: ProxyProcess } | undefined;
  const proxies: ProxyProcess[] = [];
  const controlPlanes: ControlPlaneProcess[] = [];
  const servers: Server[] = [];
  const ports: Record<string, number> = {};

  const logs = () =>
    [...controlPlanes, ...proxies]
      .map((started) => {
        const text = readFileSync(started.log, 'utf8').split('\n').slice(-30).join('\n');
        return `--- ${started.log}\n${text}`;
      })
      .join('\n');

  const startControlPlane = async (name: string, endpoint: string) => {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const log = join(dir, `${name}.log`);
    const args = ['control-plane', '--listen', `127.0.0.1:${port}`];
    args.push('--admin-listen', `127.0.0.1:${adminPort}`, '--etcd', endpoint);
    args.push('--etcd-watch-check-interval', '1s', '--log-level', 'debug');
    const started = { process: startLoom(name, args, log), log, address: `127.0.0.1:${port}` };
    controlPlanes.push(started);
    await waitForPort('127.0.0.1', port);
    return started;
  };

  const startProxy = async (id: string, controlPlane: ControlPlaneProcess) => {
    const [port, adminPort] = [await findFreePort(), await findFreePort()];
    const log = join(dir, `${id}.log`);
    const args = ['data-plane', '--control-plane', controlPlane.address, '--id', id];
    args.push('--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`);
    const started = {
      process: startLoom(id, [...args, '--log-level', 'debug'], log),
      log,
      id,
      port,
    };
    proxies.push(started);
    await waitForPort('127.0.0.1', adminPort);
    return started;
  };

  const readEtcd = async (): Promise<EtcdView> => {
    const store = new EtcdStore({ endpoints: [etcd.endpoint] });
    try {
      const range = await store.range(DEFAULT_PREFIX);
      const routes = new Map<string, string>();
      for (const item of range.items) {
        const parsed = parseResourceKey(DEFAULT_PREFIX, item.key);
        if (parsed?.kind === 'route') routes.set(parsed.name, decodeRoute(item.value).upstream);
      }
      return { epoch: range.epoch ?? (await store.epoch()), routes };
    } finally {
      await store.close();
    }
  };

  /** Reads the status through the admin API in this process; loomctl would start a process. */
  const status = async (controlPlane: ControlPlaneProcess) => {
    const client = new AdminClient(controlPlane.address);
    try {
      return await client.status();
    } finally {
      client.close();
    }
  };

  /** Asserts that `loomctl status` of every control plane reports `epoch`. */
  const assertLoomctlEpoch = async (epoch: string) => {
    for (const controlPlane of controlPlanes) {
      const result = await loomctl(controlPlane.address, ['status', '-o', 'json']);
      assert.equal(result.code, 0, result.stderr);
      assert.equal((JSON.parse(result.stdout) as StatusResponse).epoch, epoch);
    }
  };

  /** Returns every difference between what etcd stores and what the fleet serves. */
  const differences = async (expected: EtcdView): Promise<string[]> => {
    const found: string[] = [];
    for (const proxy of proxies) {
      for (const name of ROUTE_NAMES) {
        const want = expected.routes.get(name) ?? 'status 404';
        const served = await servedUpstream(proxy, name);
        if (served !== want) found.push(`${proxy.id} serves /${name} from ${served}, not ${want}`);
      }
    }
    for (const controlPlane of controlPlanes) {
      const { epoch, proxies: held } = await status(controlPlane);
      if (epoch !== expected.epoch) found.push(`${controlPlane.address} serves epoch ${epoch}`);
      const connected = held.filter((listed) => listed.connected);
      for (const proxy of connected) {
        if (proxy.ackedEpoch !== expected.epoch) {
          found.push(`${proxy.id} acked epoch ${proxy.ackedEpoch}`);
        }
      }
      // A record that another replica shares lags its proxy's ack by one write, and after a
      // wipe it is missing until that write. So every proxy must be listed, not only checked.
      for (const proxy of proxies) {
        if (!connected.some((listed) => listed.id === proxy.id)) {
          found.push(`${controlPlane.address} does not list ${proxy.id} as connected`);
        }
      }
    }
    return found;
  };

  /** Waits until the fleet serves a fresh read of etcd, then asserts it. */
  const assertServesEtcd = async (what: string): Promise<EtcdView> => {
    let last: string[] = [];
    await waitFor(what, CONVERGE_MS, async () => {
      last = await differences(await readEtcd());
      return last.length === 0;
    }).catch((error: Error) => assert.fail(`${error.message}: ${last.join('; ')}\n${logs()}`));
    const expected = await readEtcd();
    const found = await differences(expected);
    assert.deepEqual(found, [], `${what}, read again: ${found.join('; ')}\n${logs()}`);
    return expected;
  };

  /** Applies `routes` through the relayed replica and returns the config file's path. */
  const apply = async (name: string, routes: Record<string, string>, extra: string[] = []) => {
    const path = join(dir, `${name}.yaml`);
    writeFileSync(path, configYaml(ports, routes));
    const result = await loomctl(relayed.address, ['apply', '-f', path, '--prune', ...extra]);
    assert.equal(result.code, 0, result.stdout + result.stderr + logs());
    return path;
  };

  const putForeignKeys = async (count: number) => {
    for (let index = 0; index < count; index++) await foreign.put(`/other/z${index}`).value('x');
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-restore-'));
    for (const name of ['ua', 'ub']) {
      const server = await startEchoUpstream(0, name);
      servers.push(server);
      ports[name] = (server.address() as AddressInfo).port;
    }
    etcd = await startEtcd();
    relay = await TcpRelay.start(etcd.clientPort);
    foreign = new Etcd3({ hosts: [etcd.endpoint] });
    relayed = await startControlPlane('cp-relayed', `http://${relay.address}`);
    await startProxy('proxy-relayed', relayed);
  });

  after(async () => {
    await Promise.all([...controlPlanes, ...proxies].map((started) => started.process.stop()));
    foreign?.close();
    await relay?.close();
    await etcd?.stop();
    for (const server of servers) server.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('restore then revision climbs', async () => {
    await apply('a', { u: 'ua' });
    await assertServesEtcd('fleet to serve the first apply');
    const backup = join(dir, 'backup-1.db');
    await etcd.saveSnapshot(backup);
    await apply('b', { u: 'ub', after: 'ua' });
    const beforeRestore = await assertServesEtcd('fleet to serve the second apply');
    assert.equal(beforeRestore.routes.get('after'), 'ua');

    relay.cut();
    // The default cluster token keeps the cluster id, and the backup keeps the generation key.
    await etcd.restoreSnapshot(backup);
    await putForeignKeys(5);
    relay.heal();

    const restored = await assertServesEtcd('fleet to serve the restored state');
    assert.equal(restored.routes.get('u'), 'ua');
    assert.equal(restored.routes.has('after'), false);
    await assertLoomctlEpoch(restored.epoch);
  });

  test('second replica renews epoch', async () => {
    const controlPlane = await startControlPlane('cp-direct', etcd.endpoint);
    direct = { controlPlane, proxy: await startProxy('proxy-direct', controlPlane) };
    await assertServesEtcd('both replicas to serve etcd');
    const backup = join(dir, 'backup-2.db');
    await etcd.saveSnapshot(backup);
    await apply('c', { u: 'ub', second: 'ub' });
    const beforeRestore = await assertServesEtcd('both replicas to serve the apply');

    relay.cut();
    await etcd.restoreSnapshot(backup);
    // The replica connected directly finds the revision lower and renews the generation.
    await waitFor('direct replica to renew the epoch', CONVERGE_MS, async () => {
      return (await status(controlPlane)).epoch !== beforeRestore.epoch;
    }).catch((error: Error) => assert.fail(`${error.message}\n${logs()}`));
    await putForeignKeys(5);
    relay.heal();

    const restored = await assertServesEtcd('both replicas to serve the new epoch');
    assert.notEqual(restored.epoch, beforeRestore.epoch);
    assert.equal(restored.routes.has('second'), false);
    await assertLoomctlEpoch(restored.epoch);
  });

  test('wipe then writes', async () => {
    const beforeWipe = await readEtcd();
    relay.cut();
    await etcd.kill();
    rmSync(etcd.dataDir, { recursive: true, force: true });
    await etcd.restart();
    // More writes than the relayed replica has seen revisions, so its resumed watch looks valid.
    await putForeignKeys(50);
    relay.heal();

    const wiped = await assertServesEtcd('fleet to serve the wiped etcd');
    assert.notEqual(wiped.epoch, beforeWipe.epoch);
    assert.equal(wiped.routes.size, 0);

    // --wait fails when the epoch of the apply differs from the one the control plane serves.
    const path = await apply('d', { u: 'ub', after: 'ub' }, ['--wait', '--timeout', '20s']);
    const diff = await loomctl(relayed.address, ['diff', '-f', path, '--prune']);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    assert.match(diff.stdout, /no changes/);
    const applied = await assertServesEtcd('fleet to serve the apply after the wipe');
    assert.equal(applied.epoch, wiped.epoch);
    assert.equal(applied.routes.get('after'), 'ub');
    await assertLoomctlEpoch(applied.epoch);
  });

  test('restore back to same revision', async () => {
    // The relayed replica must be the only writer, so that the revisions below are exact.
    if (direct) {
      await Promise.all([direct.controlPlane.process.stop(), direct.proxy.process.stop()]);
      controlPlanes.splice(controlPlanes.indexOf(direct.controlPlane), 1);
      proxies.splice(proxies.indexOf(direct.proxy), 1);
    }
    const backup = join(dir, 'backup-3.db');
    await etcd.saveSnapshot(backup);
    await apply('e', { u: 'ub', after: 'ub', second: 'ua' });
    const beforeRestore = await assertServesEtcd('fleet to serve the last apply');

    relay.cut();
    await etcd.restoreSnapshot(backup);
    // One write brings etcd back to the revision of the lost apply, with other content.
    await putForeignKeys(1);
    relay.heal();

    const restored = await assertServesEtcd('fleet to serve the restored state');
    assert.notEqual(restored.epoch, beforeRestore.epoch);
    assert.equal(restored.routes.has('second'), false);
    await assertLoomctlEpoch(restored.epoch);
  });
});
