import cluster, { type Worker } from 'node:cluster';

import { Backoff } from '../../common/backoff.js';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import {
  isWorkerMessage,
  type PrimaryMessage,
  type PrimaryRequestBody,
  type ReplyResults,
} from './messages.js';
import { HandoffTracker } from './handoffs.js';

/** Environment variable that gives a worker its slot, 1 to the worker count. */
export const WORKER_INDEX_ENV = 'LOOM_WORKER_INDEX';

/** A worker that listened and stayed up this long has its restart backoff reset, in milliseconds. */
const STABLE_AFTER_MS = 10_000;

/**
 * Time a draining worker gets past the drain deadline to close its upstream pools and access
 * log and exit, in milliseconds. The primary kills a worker still running after it.
 */
export const WORKER_EXIT_GRACE_MS = 5_000;

/** Lifecycle state of a worker process. */
export type WorkerState = 'starting' | 'syncing' | 'listening' | 'exited';

interface Pending {
  resolve(result: unknown): void;
  reject(error: Error): void;
}

/** One worker slot: the process in it now, restarted in place when it exits. */
export class WorkerSlot {
  readonly index: number;
  worker: Worker | undefined;
  state: WorkerState = 'exited';
  /** Version of the snapshot the worker serves; 0 before its first one. */
  version = 0;
  readonly pending = new Map<number, Pending>();
  readonly backoff = new Backoff({ initialMs: 200, maxMs: 10_000 });
  /** Workers forked again in this slot after one exited unexpectedly. */
  restarts = 0;
  startedAt = 0;
  restartTimer: NodeJS.Timeout | undefined;

  constructor(index: number) {
    this.index = index;
  }

  /** PID of the worker process; 0 while none runs. */
  get pid(): number {
    return this.worker?.process.pid ?? 0;
  }
}

/** Raised for a request to a worker that exited before it replied. */
export class WorkerExitedError extends LoomError {
  constructor(slot: WorkerSlot) {
    super('LOOM_UNAVAILABLE', `worker ${slot.index} exited before it replied`);
  }
}

/** Settings of a worker pool. */
export interface WorkerPoolOptions {
  /** Number of worker processes. */
  size: number;
  logger: Logger;
  /** Called when a worker (a new one, or one restarted in its slot) is ready for a snapshot. */
  onReady(slot: WorkerSlot): void;
}

/**
 * The worker processes of a multi-process proxy, forked with node:cluster from the same
 * command line as the primary. A worker that exits is forked again in its slot after a
 * backoff with jitter (100 to 200 ms, doubling up to 5 to 10 s, reset once a worker that
 * listened stayed up 10 s), unless the pool is stopping. A worker that keeps dying at start
 * therefore costs one fork every 5 to 10 s, while the other slots go on serving. Requests to a worker are matched to its replies by id
 * and fail with {@link WorkerExitedError} when it exits first.
 */
export class WorkerPool {
  readonly slots: WorkerSlot[];
  readonly #options: WorkerPoolOptions;
  readonly #logger: Logger;
  readonly #handoffs: HandoffTracker;
  #nextId = 1;
  #stopping = false;

  constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'workers' });
    this.slots = Array.from({ length: options.size }, (_, i) => new WorkerSlot(i + 1));
    this.#handoffs = new HandoffTracker(this.#logger, () => this.#listeningWorkers());
  }

  /** Workers that accept connections. */
  get listening(): number {
    return this.slots.filter((slot) => slot.state === 'listening').length;
  }

  /** Restarts of every slot since the pool started. */
  get restarts(): number {
    return this.slots.reduce((sum, slot) => sum + slot.restarts, 0);
  }

  /** Forks every worker. */
  start(): void {
    // `advanced` serialization copies a snapshot's bytes as binary; JSON would inflate them.
    cluster.setupPrimary({ serialization: 'advanced' });
    for (const slot of this.slots) this.#fork(slot);
  }

  /**
   * Sends `request` to the worker of `slot` and resolves with its result.
   *
   * @throws WorkerExitedError when the worker exits before it replies, or runs no process.
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` with the worker's message when it failed.
   */
  request<R extends PrimaryRequestBody>(
    slot: WorkerSlot,
    request: R,
  ): Promise<ReplyResults[R['type']]> {
    const worker = slot.worker;
    if (worker === undefined || slot.state === 'exited' || !worker.isConnected()) {
      return Promise.reject(new WorkerExitedError(slot));
    }

    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (result: unknown) => void, reject });
      worker.send({ ...request, id } as PrimaryMessage, undefined, undefined, (error) => {
        // The channel closed under the message; the worker's exit rejects the request.
        if (error !== null)
          this.#logger.debug({ worker: slot.index, err: error }, 'worker message not sent');
      });
    });
  }

  /** Sends a message that gets no reply to every running worker. */
  broadcast(message: OneWayMessage): void {
    for (const slot of this.slots) this.send(slot, message);
  }

  /** Sends a message that gets no reply to the worker of `slot`, if one runs. */
  send(slot: WorkerSlot, message: OneWayMessage): void {
    if (slot.worker?.isConnected()) slot.worker.send(message, undefined, undefined, ignore);
  }

  /** Kills the worker of `slot` with SIGKILL; the pool forks a new one in its place. */
  kill(slot: WorkerSlot, reason: string): void {
    this.#logger.error({ worker: slot.index, workerPid: slot.pid, reason }, 'worker killed');
    slot.worker?.process.kill('SIGKILL');
  }

  /**
   * Stops restarting workers, sends each a drain request with `timeoutMs`, and kills those
   * still running `WORKER_EXIT_GRACE_MS` after that. Resolves once every worker exited.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.#stopping = true;
    for (const slot of this.slots) clearTimeout(slot.restartTimer);
    const running = this.slots.filter((slot) => slot.state !== 'exited');
    const exits = running.map((slot) => this.#exited(slot));
    for (const slot of running) {
      // A worker still starting may not take messages yet, and it serves nothing to drain.
      if (slot.state === 'starting') slot.worker?.process.kill('SIGTERM');
      else if (slot.worker?.isConnected()) {
        slot.worker.send({ type: 'drain', timeoutMs }, undefined, undefined, ignore);
      }
    }

    const killTimer = setTimeout(() => {
      for (const slot of running) {
        if (slot.state !== 'exited') this.kill(slot, 'drain deadline passed');
      }
    }, timeoutMs + WORKER_EXIT_GRACE_MS);
    await Promise.all(exits);
    clearTimeout(killTimer);
  }

  #listeningWorkers(): Worker[] {
    return this.slots.flatMap((slot) =>
      slot.state === 'listening' && slot.worker !== undefined ? [slot.worker] : [],
    );
  }

  #exited(slot: WorkerSlot): Promise<void> {
    const worker = slot.worker;
    if (worker === undefined || slot.state === 'exited') return Promise.resolve();
    return new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  #fork(slot: WorkerSlot): void {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index) });
    slot.worker = worker;
    slot.state = 'starting';
    slot.version = 0;
    slot.startedAt = performance.now();
    this.#handoffs.track(worker, slot.index);
    worker.on('message', (message: unknown) => this.#onMessage(slot, worker, message));
    // Without a listener, a failed IPC write would throw in the primary.
    worker.on('error', (err: Error) => {
      this.#logger.warn({ worker: slot.index, err }, 'worker channel failed');
    });
    worker.once('exit', (code, signal) => this.#onExit(slot, worker, code, signal));
  }

  #onMessage(slot: WorkerSlot, worker: Worker, message: unknown): void {
    if (slot.worker !== worker || !isWorkerMessage(message)) return;

    if (message.type === 'ready') {
      this.#options.onReady(slot);
      return;
    }
    const pending = slot.pending.get(message.id);
    if (pending === undefined) return;
    slot.pending.delete(message.id);
    if (message.ok) {
      pending.resolve(message.result);
    } else {
      pending.reject(new LoomError('LOOM_SNAPSHOT_REJECTED', message.error));
    }
  }

  #onExit(slot: WorkerSlot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;

    // A worker that never listened, such as one that dies at start, keeps its backoff growing.
    const listened = slot.state === 'listening';
    slot.state = 'exited';
    const failure = new WorkerExitedError(slot);
    for (const pending of slot.pending.values()) pending.reject(failure);
    slot.pending.clear();
    if (this.#stopping) {
      this.#logger.info(
        { worker: slot.index, workerPid: worker.process.pid, code },
        'worker exited',
      );
      return;
    }

    if (listened && performance.now() - slot.startedAt >= STABLE_AFTER_MS) slot.backoff.reset();
    const delayMs = Math.round(slot.backoff.next());
    slot.restarts++;
    this.#logger.warn(
      {
        worker: slot.index,
        workerPid: worker.process.pid,
        code,
        signal,
        restartInMs: delayMs,
        restarts: slot.restarts,
      },
      'worker exited unexpectedly, restarting',
    );
    slot.restartTimer = setTimeout(() => this.#fork(slot), delayMs);
  }
}

/** A message to a worker that gets no reply. */
type OneWayMessage = Extract<
  PrimaryMessage,
  { type: 'drain' | 'reopen-access-log' | 'target-health' }
>;

/** Send callback for messages whose delivery does not matter once the worker is gone. */
function ignore(): void {}
