import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { applyConfig, fixtureConfig, Workspace, type Member } from '../faults/harness.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { httpGet } from '../helpers/net.js';
import { parseExposition } from '../operations/exposition.js';

/** Port of the fixture upstream; nothing listens there, because no request is proxied. */
const UNUSED_UPSTREAM_PORT = 9;

describe('etcd watch metrics', { timeout: 60_000, concurrency: 1 }, () => {
  let etcd: EtcdProcess;
  let ws: Workspace;
  let cp: Member;

  /** Reads one sample of the control plane's `/metrics`; 0 when the series is absent. */
  async function sample(name: string): Promise<number> {
    const response = await httpGet(`http://127.0.0.1:${cp.adminPort}/metrics`);
    assert.equal(response.status, 200);
    const families = parseExposition(response.body);
    for (const family of families.values()) {
      const found = family.samples.find((item) => item.name === name);
      if (found) return found.value;
    }
    return 0;
  }

  /** Counts the control plane's log lines where the watch moved to `to`. */
  function watchTransitions(to: string): number {
    return readFileSync(cp.logFile, 'utf8')
      .split('\n')
      .filter((line) => line.includes('"etcd watch state changed"'))
      .filter((line) => (JSON.parse(line) as { to?: string }).to === to).length;
  }

  before(async () => {
    etcd = await startEtcd();
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--etcd', etcd.endpoint]);
    await waitFor('control plane /metrics', 15_000, async () => {
      return (await httpGet(`http://127.0.0.1:${cp.adminPort}/metrics`)).status === 200;
    });
  });

  after(async () => {
    await ws?.close();
    await etcd?.stop();
  });

  test('lag recorded after a write', async () => {
    const before = await sample('loom_control_plane_watch_lag_seconds_count');
    await applyConfig(cp.address, fixtureConfig(UNUSED_UPSTREAM_PORT, 1));

    await waitFor('watch lag sample', 10_000, async () => {
      return (await sample('loom_control_plane_watch_lag_seconds_count')) > before;
    }).catch((error: Error) => assert.fail(`${error.message}\n${ws.logs()}`));
    assert.ok((await sample('loom_control_plane_watch_lag_seconds_sum')) >= 0);
  });

  test('reconnect counted after etcd restart', async () => {
    const reconnects = await sample('loom_control_plane_etcd_watch_reconnects_total');
    const disconnects = watchTransitions('disconnected');

    await etcd.kill();
    await waitFor('watch to see etcd gone', 15_000, () => {
      return watchTransitions('disconnected') > disconnects;
    }).catch((error: Error) => assert.fail(`${error.message}\n${ws.logs()}`));
    // Same data directory and client port, so the watch resumes in the same history.
    await etcd.restart();

    await waitFor('reconnect counter to grow', 20_000, async () => {
      return (await sample('loom_control_plane_etcd_watch_reconnects_total')) > reconnects;
    }).catch((error: Error) => assert.fail(`${error.message}\n${ws.logs()}`));
    assert.equal(await sample('loom_control_plane_etcd_watch_reconnects_total'), reconnects + 1);

    // The resumed watch delivers the next commit, and its lag is recorded too.
    const lagSamples = await sample('loom_control_plane_watch_lag_seconds_count');
    await applyConfig(cp.address, fixtureConfig(UNUSED_UPSTREAM_PORT, 2));
    await waitFor('watch lag sample after the restart', 10_000, async () => {
      return (await sample('loom_control_plane_watch_lag_seconds_count')) > lagSamples;
    }).catch((error: Error) => assert.fail(`${error.message}\n${ws.logs()}`));
  });
});
