import { setTimeout as sleep } from 'node:timers/promises';

import { Range, type Etcd3, type IEvent, type IWatchResponse, type Watcher } from 'etcd3';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { isRevisionOutOfRange, toStoreError } from './etcd-errors.js';
import { isMetaKey } from './key-space.js';
import type { Watch, WatchBatch, WatchEvent, WatchHandlers } from './store.js';

/**
 * States of an etcd watch. `failed` and `canceled` are final: a failed watch
 * has called `onError` once, a canceled one never does.
 */
type WatchState = 'connecting' | 'watching' | 'disconnected' | 'failed' | 'canceled';

const TRANSITIONS: Record<WatchState, WatchState[]> = {
  connecting: ['watching', 'disconnected', 'failed', 'canceled'],
  watching: ['disconnected', 'failed', 'canceled'],
  disconnected: ['watching', 'failed', 'canceled'],
  failed: [],
  canceled: [],
};

/** Dependencies of an {@link EtcdWatch}, provided by its store. */
export interface EtcdWatchContext {
  /** Client for reads. */
  client: Etcd3;
  /** Client whose connection carries the watch stream. */
  watchClient: Etcd3;
  endpoints: string[];
  /** Store root; keys under it with a `__meta` segment are hidden. */
  root: string;
  logger: Logger;
  /** Interval of the delivery check, in milliseconds. */
  checkIntervalMs: number;
  /** Maximum wait for etcd to confirm a cancellation, in milliseconds. */
  cancelTimeoutMs: number;
  /** Reads the revision of the last commit under a directory (a prefix ending with `/`). */
  lastWriteRevision(directory: string): Promise<number>;
  /** Called when this watch stopped delivering on `watchClient`'s connection. */
  onStall(watchClient: Etcd3): void;
  /** Called each time a broken watch stream is re-established; for metrics. */
  onReconnect?(): void;
}

/**
 * A watch of one prefix on etcd that delivers one batch per revision.
 *
 * The etcd3 client (v1.1.2) reconnects a broken watch stream by itself and
 * resumes from the header revision of the last response plus one. etcd sets
 * that header to its current revision, not to the revision of the events sent,
 * so a stream that breaks while etcd is still replaying history would skip
 * events. This watch therefore tracks the revision after the last event it
 * delivered and sets it as the watcher's start revision on every disconnect.
 *
 * The watch fails with a retryable `LOOM_STORE_UNAVAILABLE` when etcd cancels
 * it, as etcd does when the start revision has been compacted. It also fails
 * when etcd's history restarts under it, because a lower revision or another
 * cluster id after a reconnect means that etcd was wiped or restored.
 *
 * A periodic check catches a stream that stays open but stops delivering. It
 * reads the directory's last-write marker (see `EtcdStore`). When the marker
 * names a revision the watch has not delivered and two checks in a row find
 * the watch no further, the store replaces the watch connection and the watch
 * fails with a retryable error.
 *
 * NOTE: a wiped etcd whose revision has already passed the watch's by the time
 * the watch reconnects looks like the same history. Only a changed epoch
 * reveals it, so callers compare epochs when they read the prefix again.
 *
 * NOTE: the delivery check sees only commits that write the marker, that is
 * commits through `EtcdStore`, and only for prefixes that end with `/`. A
 * stall during writes by other etcd clients goes unnoticed until the next
 * Loom commit.
 */
export class EtcdWatch implements Watch {
  readonly #context: EtcdWatchContext;
  readonly #prefix: string;
  readonly #handlers: WatchHandlers;
  readonly #watcher: Watcher;
  readonly #logger: Logger;
  #state: WatchState = 'connecting';
  /** Revision to resume from: one past the last revision delivered. */
  #nextRevision: number;
  /** Highest header revision etcd has reported to this watch. */
  #highestRevision = 0;
  #clusterId: string | undefined;
  #detached: Promise<void> | undefined;
  /** `#nextRevision` at the last check that found an undelivered commit. */
  #behindAt: number | undefined;
  #checking = false;
  readonly #checkTimer: NodeJS.Timeout;

  constructor(
    context: EtcdWatchContext,
    prefix: string,
    fromRevision: number,
    handlers: WatchHandlers,
  ) {
    this.#context = context;
    this.#prefix = prefix;
    this.#handlers = handlers;
    this.#nextRevision = fromRevision;
    this.#logger = context.logger.child({ prefix, fromRevision });

    // `watcher()` lets the listeners attach before any response can arrive.
    // The promise of `create()` resolves one tick after 'connected', so a
    // 'data' or 'error' emitted in between would be lost.
    this.#watcher = context.watchClient
      .watch()
      .prefix(prefix)
      .startRevision(String(fromRevision))
      .watcher();
    this.#watcher.on('connected', (response) => this.#onConnected(response));
    this.#watcher.on('data', (response) => this.#onData(response));
    this.#watcher.on('disconnected', (error) => this.#onDisconnected(error));
    this.#watcher.on('error', (error) => void this.#onCanceledByEtcd(error));
    this.#checkTimer = setInterval(() => void this.#checkDelivery(), context.checkIntervalMs);
    this.#checkTimer.unref();
  }

  /** True when this watch's stream runs on `client`'s connection. */
  usesClient(client: Etcd3): boolean {
    return this.#context.watchClient === client;
  }

  /**
   * Fails the watch because its connection stopped delivering; the caller
   * replaces the connection.
   */
  failStalled(): void {
    this.#fail(
      `etcd at ${this.#endpoints()} has commits from revision ${this.#nextRevision} on ` +
        'but the watch stream delivered none of them',
    );
    this.#detach();
  }

  /** Stops delivery at once; resolves when etcd has removed the watch. */
  cancel(): Promise<void> {
    if (this.#transition('canceled')) {
      this.#detach();
    }
    return this.#detached ?? Promise.resolve();
  }

  /** True once the watch has failed or been canceled; it delivers nothing more. */
  get stopped(): boolean {
    return this.#isFinal();
  }

  #onConnected(response: IWatchResponse): void {
    if (this.#isFinal()) {
      return;
    }
    if (this.#historyRestarted(response)) {
      this.#fail(
        `etcd at ${this.#endpoints()} restarted its history at revision ` +
          `${response.header.revision} after ${this.#highestRevision}; ` +
          'the cluster was wiped or restored',
      );
      this.#detach();
      return;
    }
    this.#transition('watching');
  }

  #onData(response: IWatchResponse): void {
    if (this.#isFinal()) {
      return;
    }
    this.#noteHeader(response);

    for (const batch of groupByRevision(response.events)) {
      this.#nextRevision = batch.revision + 1;
      const events = batch.events.filter((event) => !isMetaKey(event.key, this.#context.root));
      if (events.length > 0) {
        this.#handlers.onBatch({ revision: batch.revision, events });
      }
      if (this.#isFinal()) {
        return;
      }
    }
  }

  #onDisconnected(error: Error): void {
    if (this.#isFinal()) {
      return;
    }
    // etcd3 reads this field when it re-creates the watch on the new stream.
    this.#watcher.request.start_revision = String(this.#nextRevision);
    if (this.#state !== 'disconnected') {
      this.#transition('disconnected', error);
    }
  }

  /**
   * Handles etcd's cancellation of the watch. etcd3 drops the response's
   * compact revision and passes only the cancel reason, which etcd 3.4 leaves
   * empty for compaction, so a read at the resume revision finds out whether it
   * was compacted.
   */
  async #onCanceledByEtcd(error: Error): Promise<void> {
    if (this.#isFinal()) {
      return;
    }
    this.#transition('failed', error);

    const compacted = await this.#isCompacted(this.#nextRevision);
    const message = compacted
      ? `revision ${this.#nextRevision} of etcd at ${this.#endpoints()} has been compacted`
      : `etcd at ${this.#endpoints()} canceled the watch at revision ${this.#nextRevision}: ` +
        error.message;
    this.#handlers.onError(this.#error(message, error));
  }

  async #isCompacted(revision: number): Promise<boolean> {
    // A future revision is also out of range, but it cannot have been compacted.
    if (revision > this.#highestRevision) {
      return false;
    }

    const range = Range.prefix(this.#prefix);
    try {
      await this.#context.client.kv.range({
        key: range.start,
        range_end: range.end,
        revision,
        count_only: true,
      });
      return false;
    } catch (error) {
      return isRevisionOutOfRange(error);
    }
  }

  /** Compares the last commit under the prefix with what the watch delivered. */
  async #checkDelivery(): Promise<void> {
    const directory = this.#prefix.endsWith('/') ? this.#prefix : undefined;
    if (directory === undefined || this.#checking || this.#isFinal()) return;

    this.#checking = true;
    try {
      const lastWrite = await this.#context.lastWriteRevision(directory);
      if (this.#isFinal() || this.#state === 'disconnected' || lastWrite < this.#nextRevision) {
        this.#behindAt = undefined;
        return;
      }
      // One check may race with events in flight; two checks without progress cannot.
      if (this.#behindAt !== this.#nextRevision) {
        this.#behindAt = this.#nextRevision;
        return;
      }
      this.#logger.warn({ nextRevision: this.#nextRevision, lastWrite }, 'etcd watch stalled');
      this.#context.onStall(this.#context.watchClient);
    } catch {
      // etcd is unreachable; the store logs that, and the watch reconnects by itself.
    } finally {
      this.#checking = false;
    }
  }

  #historyRestarted(response: IWatchResponse): boolean {
    const { cluster_id: clusterId, revision } = response.header;
    const restarted =
      (this.#clusterId !== undefined && clusterId !== this.#clusterId) ||
      Number(revision) < this.#highestRevision;
    this.#noteHeader(response);
    return restarted;
  }

  #noteHeader(response: IWatchResponse): void {
    this.#clusterId ??= response.header.cluster_id;
    this.#highestRevision = Math.max(this.#highestRevision, Number(response.header.revision));
  }

  #fail(message: string): void {
    if (this.#transition('failed')) {
      this.#handlers.onError(this.#error(message));
    }
  }

  #error(message: string, cause?: unknown): LoomError {
    const full = `watch of "${this.#prefix}" stopped: ${message}`;
    const advice = '; read the prefix again and start a new watch';
    return new LoomError('LOOM_STORE_UNAVAILABLE', full + advice, { cause, retryable: true });
  }

  #detach(): void {
    const canceled = this.#watcher.cancel().catch((error: unknown) => {
      const storeError = toStoreError(error, this.#context.endpoints, 'watch cancel');
      this.#logger.warn({ err: storeError }, 'etcd watch cancel failed');
    });
    // etcd never confirms a cancellation sent on a stalled or silently broken connection.
    const timeout = sleep(this.#context.cancelTimeoutMs, undefined, { ref: false });
    this.#detached ??= Promise.race([canceled, timeout]);
  }

  #isFinal(): boolean {
    return this.#state === 'failed' || this.#state === 'canceled';
  }

  /** Moves to `next` if that is a legal move, logs it, and returns whether it moved. */
  #transition(next: WatchState, error?: Error): boolean {
    const from = this.#state;
    if (!TRANSITIONS[from].includes(next)) {
      return false;
    }

    this.#state = next;
    if (this.#isFinal()) clearInterval(this.#checkTimer);
    if (from === 'disconnected' && next === 'watching') this.#context.onReconnect?.();
    const fields = { from, to: next, nextRevision: this.#nextRevision, err: error };
    if (next === 'disconnected' || next === 'failed') {
      this.#logger.warn(fields, 'etcd watch state changed');
    } else {
      this.#logger.info(fields, 'etcd watch state changed');
    }
    return true;
  }

  #endpoints(): string {
    return this.#context.endpoints.join(',');
  }
}

/** Splits a watch response into batches of one revision each, in commit order. */
function groupByRevision(events: IEvent[]): WatchBatch[] {
  const batches: WatchBatch[] = [];
  for (const event of events) {
    const revision = Number(event.kv.mod_revision);
    const converted: WatchEvent = {
      type: event.type === 'Put' ? 'put' : 'delete',
      key: event.kv.key.toString(),
      value: event.type === 'Put' ? event.kv.value.toString() : '',
      modRevision: revision,
    };
    // etcd sends all events of one revision in one response unless the watch
    // requests fragments, which this one does not.
    const last = batches.at(-1);
    if (last?.revision === revision) {
      last.events.push(converted);
    } else {
      batches.push({ revision, events: [converted] });
    }
  }
  return batches;
}
