import type { PublishedSnapshot } from '../snapshot/build-snapshot.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';

/**
 * Maximum number of published snapshots kept while no proxy has acked them.
 * A proxy acks within moments of receiving a snapshot, so a few cover the
 * snapshots still in flight. An ack of an older snapshot changes nothing.
 */
export const PENDING_SNAPSHOT_LIMIT = 4;

type Listener = (accepted: PublishedSnapshot) => void;

/**
 * The newest snapshot that some proxy acked, kept with its encoded bytes so
 * that it can be sent again to a proxy that rejected a newer one. It keeps
 * the snapshots published since as candidates (at most
 * `PENDING_SNAPSHOT_LIMIT`), and the first ack of a candidate makes it the
 * accepted snapshot.
 *
 * NOTE: it lives in this process's memory. After a restart, and on a replica
 * that no proxy acked through, there is no accepted snapshot until some proxy
 * acks a version there, so a proxy that joins such a replica after a nack
 * gets no fallback.
 */
export class AcceptedSnapshot {
  #accepted: PublishedSnapshot | undefined;
  /** Published and not acked yet, oldest first. */
  #pending: PublishedSnapshot[] = [];
  readonly #listeners = new Set<Listener>();

  constructor(cache: SnapshotCache) {
    if (cache.current) this.#pending.push(cache.current);
    cache.subscribe((published) => this.#onPublished(published));
  }

  /** The newest snapshot some proxy acked, or undefined before the first ack. */
  get current(): PublishedSnapshot | undefined {
    return this.#accepted;
  }

  /** Registers a listener for every change of the accepted snapshot; returns its removal. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Records an ack. When it names a pending snapshot, that snapshot becomes the
   * accepted one and every snapshot published before it is dropped.
   */
  noteAck(epoch: string, version: number): void {
    const index = this.#pending.findIndex(
      ({ snapshot }) => snapshot.epoch === epoch && snapshot.version === version,
    );
    if (index === -1) return;

    this.#accepted = this.#pending[index];
    this.#pending = this.#pending.slice(index + 1);

    for (const listener of this.#listeners) listener(this.#accepted);
  }

  #onPublished(published: PublishedSnapshot): void {
    this.#pending.push(published);
    if (this.#pending.length > PENDING_SNAPSHOT_LIMIT) this.#pending.shift();
  }
}
