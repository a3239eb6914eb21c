import type { Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

import { formatHostPort, parseHostPort } from '../../common/address.js';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import type { DataPlaneOptions } from '../data-plane.js';
import { readiness, type TableSource } from '../lifecycle/readiness.js';
import { createAdminServer } from '../observability/admin-server.js';
import { ProxyMetrics } from '../observability/proxy-metrics.js';
import { SnapshotClient } from '../snapshot-client/snapshot-client.js';
import {
  DEFAULT_SNAPSHOT_CACHE_MAX_AGE_MS,
  SnapshotFile,
} from '../snapshot-client/snapshot-file.js';
import { collectClusterMetrics, registerWorkerPoolMetrics } from './cluster-metrics.js';
import { HealthProber } from './health-prober.js';
import { WorkerExitedError, WorkerPool, type WorkerSlot } from './worker-pool.js';

/** Settings of the primary of a multi-process proxy. */
export interface WorkerPrimaryOptions extends Pick<
  DataPlaneOptions,
  | 'controlPlanes'
  | 'listen'
  | 'adminListen'
  | 'id'
  | 'logger'
  | 'snapshotCache'
  | 'snapshotCacheMaxAgeMs'
  | 'tls'
  | 'token'
  | 'keepaliveTimeMs'
  | 'upstreams'
  | 'proxy'
> {
  /** Number of worker processes, at least 1. */
  workers: number;
  /** Time the first workers get to listen before `start` fails, in milliseconds; default 60 s. */
  startTimeoutMs?: number;
}

/** The snapshot every worker serves. */
interface Committed {
  epoch: string;
  version: number;
  routes: number;
  /** The snapshot encoded once, sent as is to each worker that starts. */
  bytes: Uint8Array;
}

/**
 * The primary process of a proxy that runs `--workers N` processes on one port. The workers
 * accept the connections (node:cluster hands each new connection to one of the workers that
 * listen) and the primary keeps the one snapshot stream to the control plane and the admin
 * listener.
 *
 * Every snapshot is encoded once and applied in two steps: each listening worker stages it
 * (builds and checks its table), then, once all of them staged it, each commits it (swaps the
 * table in). The primary acks after the commits. When any worker fails to stage it, the others
 * discard it, so all workers keep serving the same version, and the primary nacks with the
 * first worker's error. A worker that exits during a step drops out of it. Every new worker,
 * first ones and replacements alike, gets the current target health and applies the current
 * snapshot before its `listen` request. Snapshots and worker starts run one at a time.
 *
 * The primary also runs the active health checks, once for all workers, and sends every change
 * of target health to every worker; see {@link HealthProber}.
 */
export class WorkerPrimary {
  readonly #options: WorkerPrimaryOptions;
  readonly #logger: Logger;
  readonly #pool: WorkerPool;
  readonly #client: SnapshotClient;
  readonly #admin: Server;
  readonly #metrics = new ProxyMetrics();
  readonly #snapshotFile: SnapshotFile | undefined;
  readonly #prober: HealthProber;
  #committed: Committed | undefined;
  #source: TableSource = 'control-plane';
  #queue: Promise<unknown> = Promise.resolve();
  #draining = false;
  #port = 0;

  constructor(options: WorkerPrimaryOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid worker count ${options.workers}: expected an integer of at least 1`,
      );
    }
    this.#options = options;
    this.#logger = options.logger;
    this.#pool = new WorkerPool({
      size: options.workers,
      logger: options.logger,
      onReady: (slot) => void this.#enqueue(() => this.#startServing(slot)),
    });
    registerWorkerPoolMetrics(this.#metrics.registry, this.#pool.slots);
    this.#prober = new HealthProber({
      logger: options.logger,
      upstreams: options.upstreams,
      onChange: (unhealthy) => this.#pool.broadcast({ type: 'target-health', unhealthy }),
    });
    this.#snapshotFile =
      options.snapshotCache === undefined
        ? undefined
        : new SnapshotFile(options.snapshotCache, options.logger);
    this.#admin = createAdminServer({
      readiness: () => this.#readiness(),
      metrics: () => collectClusterMetrics(this.#pool, this.#metrics.registry, this.#logger),
      logger: this.#logger,
    });
    this.#client = new SnapshotClient({
      addresses: options.controlPlanes,
      proxyId: options.id,
      proxyAddress: options.listen.trim(),
      logger: options.logger,
      held: () => ({
        epoch: this.#committed?.epoch ?? '',
        version: this.#committed?.version ?? 0,
      }),
      apply: (snapshot) => this.#enqueue(() => this.#apply(snapshot, false)),
      tls: options.tls,
      token: options.token,
      keepaliveTimeMs: options.keepaliveTimeMs,
    });
    this.#metrics.watchControlPlane(() => this.#client.state === 'streaming');
  }

  /** Port of the admin listener. */
  get adminPort(): number {
    return (this.#admin.address() as AddressInfo).port;
  }

  /** Version every listening worker serves; 0 before the first snapshot. */
  get version(): number {
    return this.#committed?.version ?? 0;
  }

  /**
   * Starts the admin listener and the workers, waits until every worker listens, serves the
   * snapshot cache, then opens the snapshot stream.
   *
   * @throws LoomError `LOOM_UNAVAILABLE` when the workers do not all listen in time, such as
   *   when one keeps dying at start. It stops the workers and closes the admin listener first,
   *   so the process can exit.
   */
  async start(): Promise<void> {
    const adminAddress = parseHostPort(this.#options.adminListen, '--admin-listen');
    this.#admin.listen(adminAddress.port, adminAddress.host);
    await once(this.#admin, 'listening');
    this.#pool.start();
    try {
      await this.#waitForWorkers(this.#options.startTimeoutMs ?? 60_000);
    } catch (error) {
      await this.#pool.stop(0);
      this.#admin.closeAllConnections();
      await new Promise((resolve) => this.#admin.close(resolve));
      throw error;
    }
    await this.#serveSnapshotCache();
    this.#client.start();

    const host = parseHostPort(this.#options.listen, '--listen').host;
    this.#logger.info(
      {
        id: this.#options.id,
        listen: formatHostPort(host, this.#port),
        adminPort: this.adminPort,
        workers: this.#options.workers,
        controlPlanes: this.#options.controlPlanes,
        escapedSlashes: this.#options.proxy?.escapedSlashes ?? 'keep',
      },
      'proxy listening',
    );
  }

  /**
   * Shuts down gracefully: readiness turns false, the stream stops, every worker drains its
   * requests for up to `timeoutMs` and exits, a snapshot still waiting for the snapshot cache
   * file is written, then the admin listener closes.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.#draining = true;
    this.#client.stop();
    await this.#pool.stop(timeoutMs);
    await this.#snapshotFile?.flush();
    await this.#prober.close();
    this.#admin.closeAllConnections();
    await new Promise((resolve) => this.#admin.close(resolve));
    this.#logger.info({ id: this.#options.id }, 'proxy stopped');
  }

  /** Tells every worker to reopen its access log file after log rotation. */
  reopenAccessLog(): void {
    this.#pool.broadcast({ type: 'reopen-access-log' });
  }

  /** Runs `operation` after every snapshot and worker start queued before it. */
  #enqueue<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(operation);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Sends a new worker the target health and the current snapshot, then the `listen` request. */
  async #startServing(slot: WorkerSlot): Promise<void> {
    const worker = slot.worker;
    const committed = this.#committed;
    if (worker === undefined || slot.state !== 'starting' || this.#draining) return;

    slot.state = 'syncing';
    this.#pool.send(slot, { type: 'target-health', unhealthy: this.#prober.unhealthy });
    try {
      if (committed !== undefined) {
        await this.#pool.request(slot, { type: 'stage', snapshot: committed.bytes });
        await this.#pool.request(slot, { type: 'commit', version: committed.version });
        slot.version = committed.version;
      }
      const { port } = await this.#pool.request(slot, { type: 'listen' });
      if (slot.worker !== worker || slot.state !== 'syncing') return;
      slot.state = 'listening';
      this.#port = port;
    } catch (error) {
      if (error instanceof WorkerExitedError) return;
      // The worker cannot serve the version the others serve; a new one tries again.
      const reason = `applying version ${committed?.version ?? 0} failed: ${(error as Error).message}`;
      this.#pool.kill(slot, reason);
    }
  }

  /** Applies a snapshot on every listening worker in two steps; see the class comment. */
  async #apply(snapshot: Snapshot, fromCache: boolean): Promise<void> {
    const start = performance.now();
    const { epoch, version } = snapshot;
    // A StreamResponse, so each worker's SnapshotDecoder keeps the objects of unchanged routes.
    const bytes = StreamResponse.encode({ snapshot }).finish();
    const participants = this.#pool.slots.filter((slot) => slot.state === 'listening');

    const results = await Promise.allSettled(
      participants.map((slot) => this.#pool.request(slot, { type: 'stage', snapshot: bytes })),
    );
    const staged: WorkerSlot[] = [];
    let buildMs = 0;
    let failure: string | undefined;
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') {
        staged.push(participants[i]);
        buildMs = Math.max(buildMs, result.value.buildMs);
      } else if (!(result.reason instanceof WorkerExitedError)) {
        failure ??= `worker ${participants[i].index}: ${(result.reason as Error).message}`;
      }
    });
    if (failure === undefined && participants.length > 0 && staged.length === 0) {
      failure = 'every worker exited while staging the snapshot';
    }
    if (failure !== undefined) {
      await Promise.allSettled(staged.map((slot) => this.#pool.request(slot, { type: 'discard' })));
      this.#metrics.snapshotRejected();
      this.#logger.warn({ epoch, version, error: failure }, 'snapshot rejected');
      throw new Error(failure);
    }

    await this.#commit(staged, version);
    this.#prober.update(snapshot.upstreams);
    this.#committed = { epoch, version, routes: snapshot.routes.length, bytes };
    this.#source = fromCache ? 'snapshot-cache' : 'control-plane';
    if (!fromCache) void this.#snapshotFile?.save(snapshot);
    const applyMs = performance.now() - start;
    this.#metrics.snapshotApplied(version, snapshot.routes.length, applyMs / 1e3, buildMs / 1e3);
    this.#logger.info(
      {
        epoch,
        version,
        routes: snapshot.routes.length,
        workers: staged.length,
        buildMs: Number(buildMs.toFixed(2)),
        applyMs: Number(applyMs.toFixed(2)),
      },
      'snapshot applied',
    );
  }

  /** Commits the staged version on `slots`; a worker whose commit failed is replaced. */
  async #commit(slots: WorkerSlot[], version: number): Promise<void> {
    const results = await Promise.allSettled(
      slots.map((slot) => this.#pool.request(slot, { type: 'commit', version })),
    );
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') {
        slots[i].version = version;
      } else if (!(result.reason instanceof WorkerExitedError)) {
        const reason = `commit of version ${version} failed: ${(result.reason as Error).message}`;
        this.#pool.kill(slots[i], reason);
      }
    });
  }

  async #waitForWorkers(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.#pool.listening < this.#options.workers) {
      if (performance.now() > deadline) {
        throw new LoomError(
          'LOOM_UNAVAILABLE',
          `only ${this.#pool.listening} of ${this.#options.workers} workers listened within ` +
            `${timeoutMs} ms; see the worker log lines above`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Serves the cached snapshot, if young enough, until the control plane sends one. */
  async #serveSnapshotCache(): Promise<void> {
    if (this.#snapshotFile === undefined) return;

    const maxAgeMs = this.#options.snapshotCacheMaxAgeMs ?? DEFAULT_SNAPSHOT_CACHE_MAX_AGE_MS;
    const cached = await this.#snapshotFile.load(maxAgeMs);
    if (cached === undefined) return;
    try {
      await this.#enqueue(() => this.#apply(cached.snapshot, true));
    } catch {
      return; // #apply logged the rejection; the control plane's snapshot will follow.
    }
    this.#logger.warn(
      {
        path: this.#snapshotFile.path,
        epoch: cached.snapshot.epoch,
        version: cached.snapshot.version,
        ageMs: Date.now() - cached.savedAtMs,
      },
      'serving cached snapshot',
    );
  }

  /**
   * Readiness of a single proxy, plus the worker counts and restarts; not ready while no worker
   * listens. A slot that keeps crashing lowers `listening` but leaves the proxy ready.
   */
  #readiness(): { status: number; body: Record<string, unknown> } {
    const committed = this.#committed;
    const answer = readiness({
      table: committed === undefined ? undefined : committed,
      source: this.#source,
      draining: this.#draining,
      controlPlaneConnected: this.#client.state === 'streaming',
      idRejection: this.#client.idRejection,
      escapedSlashes: this.#options.proxy?.escapedSlashes ?? 'keep',
    });
    const workers = {
      listening: this.#pool.listening,
      configured: this.#options.workers,
      restarts: this.#pool.restarts,
    };
    if (answer.status === 200 && workers.listening === 0) {
      const body = {
        status: 'not_ready',
        reason: 'no worker listens',
        workers,
        escapedSlashes: answer.body.escapedSlashes,
      };
      return { status: 503, body };
    }
    return { status: answer.status, body: { ...answer.body, workers } };
  }
}
