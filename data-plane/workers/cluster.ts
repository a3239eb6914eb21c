import cluster from 'node:cluster';

import type { DataPlaneOptions } from '../data-plane.js';
import { WorkerPrimary } from './primary.js';
import { ProxyWorker, workerFaults } from './worker.js';
import { WORKER_INDEX_ENV } from './worker-pool.js';

/** Handle on this process's part of a multi-process proxy, primary or worker, for the CLI. */
export interface ClusterProcess {
  /** Drains gracefully within `timeoutMs`; a worker exits the process when done. */
  drain(timeoutMs: number): Promise<void>;
  /** Reopens the access log file after log rotation, in every worker. */
  reopenAccessLog(): void;
}

/**
 * Starts this process's part of a proxy with `workers` processes: the primary when this is the
 * process the user started, else the worker whose slot `LOOM_WORKER_INDEX` names. Workers run
 * the same command line as the primary, so both parse the same flags.
 */
export async function startClusterProcess(
  options: DataPlaneOptions & { workers: number },
): Promise<ClusterProcess> {
  if (cluster.isPrimary) {
    const primary = new WorkerPrimary(options);
    await primary.start();
    return primary;
  }

  const index = Number(process.env[WORKER_INDEX_ENV]);
  const worker = new ProxyWorker({
    index,
    listen: options.listen,
    logger: options.logger.child({ worker: index }),
    accessLog: options.accessLog,
    proxy: options.proxy,
    upstreams: options.upstreams,
    drainGrace: options.drainGrace,
    faults: workerFaults(index),
  });
  worker.start();
  return worker;
}
