import { Etcd3 } from 'etcd3';

import { startEtcd, type EtcdProcess } from './etcd.js';
import { startFleet, type Fleet } from './fleet.js';

/** A test etcd, a client of it, and a fleet whose control plane stores routes in it. */
export interface EtcdBackedFleet {
  etcd: EtcdProcess;
  /** etcd client for the test's own reads and writes, bypassing the control plane. */
  client: Etcd3;
  fleet: Fleet;
  /** Stops the fleet, closes the client and stops etcd. */
  stop(): Promise<void>;
}

/**
 * Starts etcd and a fleet of one control plane and `proxies` proxies on it. When the fleet
 * fails to start, etcd is stopped before the error is raised again.
 */
export async function startEtcdFleet(options: { proxies: number }): Promise<EtcdBackedFleet> {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  let fleet: Fleet;
  try {
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: options.proxies });
  } catch (error) {
    client.close();
    await etcd.stop();
    throw error;
  }
  return {
    etcd,
    client,
    fleet,
    async stop() {
      await fleet.stop();
      client.close();
      await etcd.stop();
    },
  };
}
