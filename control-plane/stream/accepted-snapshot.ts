import { pino } from 'pino';

import type { Logger } from '../../common/logger.js';
import type { PublishedSnapshot } from '../snapshot/build-snapshot.js';
import { rebuildSnapshot } from '../snapshot/rebuild-snapshot.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';
import type { AcceptedVersion, Store } from '../store/store.js';

/**
 * Published snapshots kept while no proxy has acked them: always the newest
 * `PENDING_SNAPSHOT_LIMIT`, and older ones up to `PENDING_SNAPSHOT_MAX` while
 * all of them together take at most `PENDING_BYTES_LIMIT` encoded. A proxy that
 * was stopped or slow may ack a version after several newer ones were published
 * (applies in a burst). Small configs keep enough versions for that, and large
 * ones bound the memory. An ack of a version no longer kept changes nothing.
 */
export const PENDING_SNAPSHOT_LIMIT = 4;
export const PENDING_SNAPSHOT_MAX = 32;
export const PENDING_BYTES_LIMIT = 64 * 1024 * 1024;

type Listener = (accepted: PublishedSnapshot) => void;

/** Options of {@link AcceptedSnapshot}. */
export interface AcceptedSnapshotOptions {
  /**
   * Store that records the accepted version for every control plane. Without one, the
   * accepted snapshot lives in this process's memory only.
   */
  store?: Store;
  /** Key prefix of the resources, to rebuild a snapshot from the store's keys. */
  prefix?: string;
  logger?: Logger;
}

/**
 * The newest snapshot that some proxy acked, kept with its encoded bytes so
 * that it can be sent again to a proxy that rejected a newer one. It keeps
 * the snapshots published since as candidates (see
 * `PENDING_SNAPSHOT_LIMIT`), and the first ack of a candidate makes it the
 * accepted snapshot.
 *
 * With a store, the first ack of each newer version is also recorded there, one write at a
 * time with only the newest version waiting. `refresh` reads the record back and, when it
 * names a newer version than the one in memory, takes that snapshot from the ones this
 * process published or rebuilds it from the store. So a replica that no proxy acked
 * through, or one that just restarted, still has the accepted snapshot. The control plane
 * refreshes on its first snapshot of each epoch and on every nack.
 */
export class AcceptedSnapshot {
  #accepted: PublishedSnapshot | undefined;
  /** Published and not acked yet, oldest first. */
  #pending: PublishedSnapshot[] = [];
  readonly #listeners = new Set<Listener>();
  readonly #cache: SnapshotCache;
  readonly #store: Store | undefined;
  readonly #prefix: string;
  readonly #logger: Logger;
  /** Newest accepted snapshot still to be recorded in the store. */
  #unrecorded: PublishedSnapshot | undefined;
  #recording: Promise<void> | undefined;
  #loading: Promise<void> | undefined;
  /** Epoch of the last published snapshot; a new one triggers a refresh. */
  #publishedEpoch = '';
  /** `epoch/version` of the recorded versions that could not be rebuilt; not tried again. */
  readonly #unavailable = new Set<string>();

  constructor(cache: SnapshotCache, options: AcceptedSnapshotOptions = {}) {
    this.#cache = cache;
    this.#store = options.store;
    this.#prefix = options.prefix ?? '';
    this.#logger = options.logger ?? pino({ enabled: false });
    if (cache.current) this.#onPublished(cache.current);
    cache.subscribe((published) => this.#onPublished(published));
  }

  /**
   * The newest snapshot some proxy acked, or undefined before the first ack. A snapshot of
   * an epoch other than the cache's current one is never returned: a wiped or restored
   * store starts a new history, in which that version means nothing.
   */
  get current(): PublishedSnapshot | undefined {
    const epoch = this.#cache.current?.snapshot.epoch;
    if (this.#accepted === undefined || this.#accepted.snapshot.epoch !== epoch) return undefined;
    return this.#accepted;
  }

  /** Registers a listener for every change of the accepted snapshot; returns its removal. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Records an ack. When it names a pending snapshot, that snapshot becomes the
   * accepted one, every snapshot published before it is dropped, and the store
   * records it.
   */
  noteAck(epoch: string, version: number): void {
    const index = this.#pending.findIndex(
      ({ snapshot }) => snapshot.epoch === epoch && snapshot.version === version,
    );
    if (index === -1) return;

    this.#accepted = this.#pending[index];
    this.#pending = this.#pending.slice(index + 1);
    this.#record(this.#accepted);

    for (const listener of this.#listeners) listener(this.#accepted);
  }

  /**
   * Reads the accepted version recorded in the store and makes it the accepted snapshot
   * when it is newer than the one in memory. Concurrent calls share one read. Never
   * rejects: a failed read is logged and the next call tries again.
   */
  refresh(): Promise<void> {
    if (this.#store === undefined) return Promise.resolve();

    this.#loading ??= this.#load(this.#store).finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  /** Resolves once no store read or write of this object is in flight. */
  async settled(): Promise<void> {
    while (this.#loading !== undefined || this.#recording !== undefined) {
      await Promise.all([this.#loading, this.#recording]);
    }
  }

  #onPublished(published: PublishedSnapshot): void {
    this.#pending.push(withoutDecodedContent(published));
    this.#trimPending();

    if (published.snapshot.epoch === this.#publishedEpoch) return;
    this.#publishedEpoch = published.snapshot.epoch;
    void this.refresh();
  }

  #trimPending(): void {
    let bytes = 0;
    for (const { encoded } of this.#pending) bytes += encoded.length;
    while (
      this.#pending.length > PENDING_SNAPSHOT_LIMIT &&
      (this.#pending.length > PENDING_SNAPSHOT_MAX || bytes > PENDING_BYTES_LIMIT)
    ) {
      bytes -= this.#pending.shift()!.encoded.length;
    }
  }

  #record(accepted: PublishedSnapshot): void {
    if (this.#store === undefined) return;

    this.#unrecorded = accepted;
    this.#recording ??= this.#recordQueued(this.#store).finally(() => {
      this.#recording = undefined;
      // An ack that arrived after the loop's last check still needs its write.
      if (this.#unrecorded !== undefined) this.#record(this.#unrecorded);
    });
  }

  async #recordQueued(store: Store): Promise<void> {
    while (this.#unrecorded !== undefined) {
      const published = this.#unrecorded;
      this.#unrecorded = undefined;
      const { epoch, version, hash } = published.snapshot;
      try {
        if (await store.recordAccepted({ epoch, version, hash }, published.content)) {
          this.#logger.info({ epoch, version, hash }, 'accepted version recorded');
        }
      } catch (error) {
        // The next accepted version is recorded in its place; nothing retries this one.
        this.#logger.warn({ err: error, epoch, version }, 'accepted version not recorded');
      }
    }
  }

  async #load(store: Store): Promise<void> {
    let stored: AcceptedVersion | undefined;
    try {
      stored = await store.acceptedVersion();
    } catch (error) {
      this.#logger.warn({ err: error }, 'accepted version read failed');
      return;
    }
    if (stored === undefined || !this.#isNewer(stored)) return;

    const local = this.#findPublished(stored);
    if (local !== undefined) {
      this.#adopt(local, 'published');
      return;
    }
    const key = `${stored.epoch}/${stored.version}`;
    if (this.#unavailable.has(key)) return;

    const rebuilt = await this.#rebuild(store, stored);
    if (rebuilt === 'unavailable') {
      this.#unavailable.add(key);
    } else if (rebuilt !== undefined && this.#isNewer(stored)) {
      this.#adopt(rebuilt, 'store');
    }
  }

  /** Returns true when `stored` is of the current epoch and newer than the accepted snapshot. */
  #isNewer(stored: AcceptedVersion): boolean {
    if (stored.epoch !== this.#cache.current?.snapshot.epoch) return false;

    const known = this.#accepted?.snapshot;
    return known === undefined || known.epoch !== stored.epoch || known.version < stored.version;
  }

  /** Returns a snapshot this process published that has the stored epoch, version and hash. */
  #findPublished(stored: AcceptedVersion): PublishedSnapshot | undefined {
    const candidates = [...this.#pending, this.#cache.current];
    return candidates.find(
      (published) =>
        published !== undefined &&
        published.snapshot.epoch === stored.epoch &&
        published.snapshot.version === stored.version &&
        published.snapshot.hash === stored.hash,
    );
  }

  /**
   * Rebuilds the stored version's snapshot. Returns `unavailable`, after one log line with
   * the reason, when the store no longer keeps the data it takes or the content differs
   * from the one the proxies acked. Returns undefined when the read failed, which is logged and
   * left for the next refresh.
   */
  async #rebuild(
    store: Store,
    stored: AcceptedVersion,
  ): Promise<PublishedSnapshot | 'unavailable' | undefined> {
    const fields = { epoch: stored.epoch, version: stored.version };
    let content;
    try {
      content = await store.readAcceptedContent(this.#prefix, stored);
    } catch (error) {
      this.#logger.warn({ ...fields, err: error }, 'accepted version read failed');
      return undefined;
    }

    if (content.kind === 'compacted') {
      this.#logger.warn(
        { ...fields, reason: 'compacted', storeRevision: content.storeRevision },
        'accepted snapshot not rebuilt',
      );
      return 'unavailable';
    }
    if (content.kind === 'missing') {
      this.#logger.warn({ ...fields, reason: 'missing' }, 'accepted snapshot not rebuilt');
      return 'unavailable';
    }

    const rebuilt = rebuildSnapshot(this.#prefix, stored, content, this.#logger);
    if (rebuilt.snapshot.hash !== stored.hash) {
      this.#logger.warn(
        { ...fields, reason: 'hash mismatch', hash: rebuilt.snapshot.hash, expected: stored.hash },
        'accepted snapshot not rebuilt',
      );
      return 'unavailable';
    }
    return rebuilt;
  }

  #adopt(published: PublishedSnapshot, source: 'published' | 'store'): void {
    const { epoch, version, hash } = published.snapshot;
    this.#accepted = published;
    this.#unavailable.clear();
    this.#pending = this.#pending.filter(
      ({ snapshot }) => snapshot.epoch !== epoch || snapshot.version > version,
    );
    this.#logger.info({ epoch, version, hash, source }, 'accepted snapshot loaded');
    for (const listener of this.#listeners) listener(published);
  }
}

/**
 * Returns `published` without its decoded routes and upstreams. The stream sends `encoded` and
 * the store records `content`, so a kept snapshot needs neither. The decoded objects take many
 * times the encoded size, which `PENDING_BYTES_LIMIT` counts, and a burst of applies that no
 * proxy acks would otherwise keep `PENDING_SNAPSHOT_MAX` whole configurations.
 */
function withoutDecodedContent(published: PublishedSnapshot): PublishedSnapshot {
  const { version, epoch, hash } = published.snapshot;
  const snapshot = Object.freeze({ version, epoch, hash, routes: [], upstreams: [] });
  return { snapshot, encoded: published.encoded, content: published.content };
}
