import { LoomError } from '../../common/errors.js';
import type { Watch, WatchBatch, WatchHandlers } from './store.js';

/** Bounds of a {@link WatchHub}'s history; the newest batch is kept whatever its size. */
export interface HistoryLimits {
  /** Maximum number of batches. */
  batches: number;
  /** Maximum sum of the characters of the batches' keys and values. */
  bytes: number;
}

/** Returns the characters of a batch's keys and values, plus a small amount per event. */
function batchSize(batch: WatchBatch): number {
  let size = 0;
  for (const event of batch.events) size += event.key.length + event.value.length + 32;
  return size;
}

/**
 * The in-process watch side of the embedded store: a bounded history of
 * recent batches and the running watches. Delivery is always asynchronous, in
 * a microtask, so no handler runs inside `commit` or `watch`.
 */
export class WatchHub {
  readonly #limits: HistoryLimits;
  readonly #describe: string;
  /** Batches of consecutive revisions, oldest first. */
  readonly #history: WatchBatch[] = [];
  /** Size of each batch of `#history`, in the same order. */
  readonly #sizes: number[] = [];
  /** Sum of `#sizes`. */
  #historySize = 0;
  readonly #watches = new Set<EmbeddedWatch>();
  #currentRevision: number;

  /**
   * @param currentRevision the store's revision; history starts after it.
   * @param describe the store's location, for error messages.
   */
  constructor(limits: HistoryLimits, currentRevision: number, describe: string) {
    this.#limits = limits;
    this.#currentRevision = currentRevision;
    this.#describe = describe;
  }

  /** Oldest revision a new watch can start from. */
  get oldestRevision(): number {
    return this.#history[0]?.revision ?? this.#currentRevision + 1;
  }

  /** Records the batch of a new revision and queues it for every watch. */
  publish(batch: WatchBatch): void {
    this.#currentRevision = batch.revision;
    const size = batchSize(batch);
    this.#history.push(batch);
    this.#sizes.push(size);
    this.#historySize += size;
    while (
      this.#history.length > 1 &&
      (this.#history.length > this.#limits.batches || this.#historySize > this.#limits.bytes)
    ) {
      this.#history.shift();
      this.#historySize -= this.#sizes.shift()!;
    }
    for (const watch of this.#watches) {
      watch.enqueue(batch);
    }
  }

  /**
   * Starts a watch. A start revision older than the history fails the watch,
   * asynchronously, with a retryable `LOOM_STORE_UNAVAILABLE`, as etcd does for
   * a compacted revision.
   */
  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    const watch = new EmbeddedWatch(prefix, handlers, (stopped) => this.#watches.delete(stopped));
    if (fromRevision < this.oldestRevision) {
      watch.fail(
        new LoomError(
          'LOOM_STORE_UNAVAILABLE',
          `watch of "${prefix}" stopped: revision ${fromRevision} of ${this.#describe} ` +
            `is no longer in the watch history, which starts at ${this.oldestRevision}; ` +
            'read the prefix again and start a new watch',
          { retryable: true },
        ),
      );
      return watch;
    }

    this.#watches.add(watch);
    for (const batch of this.#history) {
      if (batch.revision >= fromRevision) {
        watch.enqueue(batch);
      }
    }
    return watch;
  }

  /** Stops every watch without calling its handlers. */
  close(): void {
    for (const watch of this.#watches) {
      void watch.cancel();
    }
  }
}

type EmbeddedWatchState = 'active' | 'failed' | 'canceled';

class EmbeddedWatch implements Watch {
  readonly #prefix: string;
  readonly #handlers: WatchHandlers;
  readonly #onStop: (watch: EmbeddedWatch) => void;
  readonly #queue: WatchBatch[] = [];
  #state: EmbeddedWatchState = 'active';
  #drainScheduled = false;

  constructor(prefix: string, handlers: WatchHandlers, onStop: (watch: EmbeddedWatch) => void) {
    this.#prefix = prefix;
    this.#handlers = handlers;
    this.#onStop = onStop;
  }

  /** Queues the part of `batch` under this watch's prefix, if any. */
  enqueue(batch: WatchBatch): void {
    const events = batch.events.filter((event) => event.key.startsWith(this.#prefix));
    if (this.#state !== 'active' || events.length === 0) {
      return;
    }

    this.#queue.push({ revision: batch.revision, events });
    if (!this.#drainScheduled) {
      this.#drainScheduled = true;
      queueMicrotask(() => this.#drain());
    }
  }

  /** Ends the watch and calls `onError` in a microtask. */
  fail(error: LoomError): void {
    if (this.#state !== 'active') {
      return;
    }

    this.#stop('failed');
    queueMicrotask(() => this.#handlers.onError(error));
  }

  async cancel(): Promise<void> {
    if (this.#state === 'active') {
      this.#stop('canceled');
    }
  }

  #stop(state: EmbeddedWatchState): void {
    this.#state = state;
    this.#queue.length = 0;
    this.#onStop(this);
  }

  #drain(): void {
    this.#drainScheduled = false;
    // A handler may cancel the watch, which empties the queue and ends the loop.
    while (this.#state === 'active' && this.#queue.length > 0) {
      const batch = this.#queue.shift() as WatchBatch;
      this.#handlers.onBatch(batch);
    }
  }
}
