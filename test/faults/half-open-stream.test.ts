import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { proxyRows } from '../helpers/fleet-status.js';
import { startReplicas, type Replicas } from '../helpers/replicas.js';
import { sampleValue, scrape } from '../operations/exposition.js';
import { fixtureText, logLines, startUpstream, Workspace, type Member } from './harness.js';
import { TcpRelay } from './relay.js';

const REPLACED = 'proxy stream replaced by a new stream of the same process';
const REJECTED = 'stream rejected: duplicate proxy id';
const PROXY_REJECTED = 'control plane rejected the proxy id';

/** Lines of `message` about proxy `id` in a member's log. */
function linesOf(member: Member, message: string, id: string): Record<string, unknown>[] {
  return logLines(member, message).filter((line) => line.proxyId === id);
}

// A proxy whose connection died for it alone (the control plane never saw a FIN or RST)
// reconnects under the same id and instance id while the control plane still has the old
// stream open. The relay closes the proxy's side and keeps the control plane's side open and silent.
for (const store of ['embedded', 'etcd'] as const) {
  describe(`half-open stream with the ${store} store`, { timeout: 120_000 }, () => {
    let etcd: EtcdProcess | undefined;
    let upstream: Awaited<ReturnType<typeof startUpstream>>;
    let ws: Workspace;
    let cp: Member;
    let relay: TcpRelay;
    let proxy: Member;

    async function applyWaiting(routes: string[]): Promise<void> {
      const file = join(ws.dir, `${routes.join('-')}.yaml`);
      writeFileSync(file, fixtureText(upstream.port, routes));
      const applied = await loomctl(cp.address, ['apply', '-f', file, '--wait']);
      assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
      assert.match(applied.stdout, /applied by 1 of 1 proxies/);
    }

    before(async () => {
      upstream = await startUpstream('echo');
      ws = new Workspace();
      let storeArgs = ['--data-dir', join(ws.dir, 'store')];
      if (store === 'etcd') {
        etcd = await startEtcd();
        storeArgs = ['--etcd', etcd.endpoint];
      }
      cp = await ws.controlPlane('cp', storeArgs);
      relay = await TcpRelay.start(cp.port);
      proxy = await ws.proxy('p1', [relay.address]);
      await applyWaiting(['base']);
    });

    after(async () => {
      await relay.close();
      await ws.close();
      upstream.server.close();
      await etcd?.stop();
    });

    test('same instance replaces held stream', async () => {
      assert.equal(linesOf(cp, 'proxy connected', 'p1').length, 1, ws.logs());
      assert.equal(relay.orphanOpen(), 1);
      // The control plane logs the replacement before the new stream's connect line.
      await waitFor('the control plane to replace the stream of p1', 20_000, async () => {
        return (
          linesOf(cp, REPLACED, 'p1').length === 1 &&
          linesOf(cp, 'proxy connected', 'p1').length === 2
        );
      });

      const connected = linesOf(cp, 'proxy connected', 'p1');
      assert.equal(connected.length, 2, ws.logs());
      assert.equal(connected[1].instanceId, connected[0].instanceId);
      const [replaced] = linesOf(cp, REPLACED, 'p1');
      assert.equal(replaced.instanceId, connected[0].instanceId);
      assert.equal(replaced.address, proxy.address);
      const ended = linesOf(cp, 'proxy disconnected', 'p1');
      assert.equal(ended.length, 1, ws.logs());
      assert.match(String(ended[0].reason), /replaced by a new stream of the same proxy process/);
      assert.equal(logLines(cp, REJECTED).length, 0, ws.logs());
      assert.equal(logLines(proxy, PROXY_REJECTED).length, 0, ws.logs());
      const metrics = await scrape(`http://127.0.0.1:${cp.adminPort}/metrics`);
      const rejections = sampleValue(
        metrics,
        'loom_control_plane_duplicate_proxy_id_rejections_total',
        { holder: 'this_replica' },
      );
      assert.equal(rejections, 0);

      const rows = await proxyRows(cp.address, 'p1');
      assert.equal(rows.length, 1, JSON.stringify(rows));
      assert.equal(rows[0].connected, true);
      assert.equal(rows[0].address, proxy.address);
      assert.equal(rows[0].instanceId, connected[0].instanceId);
      await applyWaiting(['base', 'after-replace']);
    });

    test('closing the old connection keeps the new stream', async () => {
      assert.equal(relay.closeOrphans(), 1);
      // The replaced stream ended already, so its connection's close must not disconnect p1.
      await applyWaiting(['base', 'after-close']);
      const rows = await proxyRows(cp.address, 'p1');
      assert.equal(rows.length, 1, JSON.stringify(rows));
      assert.equal(rows[0].connected, true);
      assert.equal(linesOf(cp, 'proxy disconnected', 'p1').length, 1, ws.logs());
    });
  });
}

// The same, but the proxy moves to another replica, which finds the old stream in the shared
// records of the first. The first replica keeps the old stream until its keepalive ends it.
describe('half-open stream across replicas', { timeout: 120_000 }, () => {
  let replicas: Replicas;
  let relay: TcpRelay;
  let proxy: Member;

  before(async () => {
    replicas = await startReplicas();
    relay = await TcpRelay.start(replicas.first.port);
    // The proxy tries its addresses in turn, so it reconnects through the second replica.
    proxy = await replicas.ws.proxy('p1', [relay.address, replicas.second.address]);
    await waitFor('p1 to be shared with cp-b', 20_000, async () => {
      const rows = await proxyRows(replicas.second.address, 'p1');
      return rows.length === 1 && rows[0].connected;
    });
  });

  after(async () => {
    await relay.close();
    await replicas.close();
  });

  test('other replica admits same instance', async () => {
    const { ws, first, second, upstream } = replicas;
    const [held] = linesOf(first, 'proxy connected', 'p1');
    assert.equal(relay.orphanOpen(), 1);
    await waitFor('p1 to connect through cp-b', 20_000, async () => {
      return linesOf(second, 'proxy connected', 'p1').length === 1;
    });

    const [moved] = linesOf(second, 'proxy connected', 'p1');
    assert.equal(moved.instanceId, held.instanceId);
    assert.equal(logLines(second, REJECTED).length, 0, ws.logs());
    assert.equal(logLines(proxy, PROXY_REJECTED).length, 0, ws.logs());
    // Until its keepalive ends the old stream, cp-a still counts p1 as connected to itself.
    assert.equal(linesOf(first, 'proxy disconnected', 'p1').length, 0, ws.logs());

    const file = join(ws.dir, 'moved.yaml');
    writeFileSync(file, fixtureText(upstream.port, ['moved']));
    const applied = await loomctl(second.address, ['apply', '-f', file, '--wait']);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr + ws.logs());
    assert.match(applied.stdout, /applied by 1 of 1 proxies/);
    for (const controlPlane of [first, second]) {
      const rows = await proxyRows(controlPlane.address, 'p1');
      assert.equal(rows.length, 1, `${controlPlane.name}: ${JSON.stringify(rows)}`);
      assert.equal(rows[0].connected, true, controlPlane.name);
      // A replica names itself by host name and port.
      assert.ok(rows[0].controlPlane.endsWith(`:${second.port}`), rows[0].controlPlane);
    }
  });
});
