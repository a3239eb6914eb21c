import { AdminClient } from '../../cli/admin-client.js';
import { readStatus } from '../../cli/commands/status.js';
import type { ProxyStatus, StatusResponse } from '../../proto/gen/loom/v1/admin.js';
import type { FleetProxy } from './fleet.js';
import { httpGet } from './net.js';

/**
 * Returns the status that `loomctl status -o json` prints for the control plane at
 * `controlPlane`. It reads the status in this process, because starting loomctl takes about
 * 0.7 s of CPU and tests poll this often. Each read opens its own connection, as a loomctl
 * process does. The tests of loomctl's own output run loomctl.
 */
export async function fleetStatus(controlPlane: string): Promise<StatusResponse> {
  const client = new AdminClient(controlPlane, {}, { 'grpc.use_local_subchannel_pool': 1 });
  try {
    return await readStatus(client);
  } finally {
    client.close();
  }
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
