import assert from 'node:assert/strict';

import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import { loomctl } from './cli.js';
import type { FleetProxy } from './fleet.js';
import { httpGet } from './net.js';

/** Returns `loomctl status -o json` of the control plane at `controlPlane`. */
export async function fleetStatus(controlPlane: string): Promise<StatusResponse> {
  const result = await loomctl(controlPlane, ['status', '-o', 'json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as StatusResponse;
}

/** Returns the status record of proxy `id`, or undefined when the control plane has none. */
export async function proxyStatus(
  controlPlane: string,
  id: string,
): Promise<ProxyStatus | undefined> {
  return (await fleetStatus(controlPlane)).proxies.find((proxy) => proxy.id === id);
}

/**
 * Returns every status row of proxy `id`: one, or one per process while two processes hold the
 * id through different replicas.
 */
export async function proxyRows(controlPlane: string, id: string): Promise<ProxyStatus[]> {
  return (await fleetStatus(controlPlane)).proxies.filter((proxy) => proxy.id === id);
}

/** Returns the number of snapshots the proxy rejected, read from its metrics. */
export async function rejectedSnapshots(proxy: FleetProxy): Promise<number> {
  const metrics = await httpGet(`http://127.0.0.1:${proxy.adminPort}/metrics`);
  const match = /^loom_proxy_snapshots_total\{result="rejected"\} (\d+)$/m.exec(metrics.body);
  return match === null ? 0 : Number(match[1]);
}
