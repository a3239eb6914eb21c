import { Backoff } from '../../common/backoff.js';
import type { Logger } from '../../common/logger.js';
import type { FleetStore } from '../store/store.js';
import type { ProxyRegistry } from '../stream/proxy-registry.js';
import { encodeSharedProxy } from './fleet-records.js';

/**
 * How long changes collect before one write, in milliseconds. All proxies ack a new
 * version within a few milliseconds of each other, so their acks share a write.
 */
const DEFAULT_DELAY_MS = 50;

/** Settings of {@link FleetPublisher}. */
export interface FleetPublisherOptions {
  registry: ProxyRegistry;
  fleet: FleetStore;
  /** Identifier of this control-plane process, unique among the replicas. */
  replica: string;
  /** This control plane as host:port, shown next to its proxies. */
  controlPlane: string;
  logger: Logger;
  delayMs?: number;
}

/**
 * Shares this control plane's proxy records with the other replicas on the store. Each
 * change of a proxy in the registry marks it; marked proxies are written together after
 * `delayMs`. A failed write keeps them marked and is retried with backoff, and when the
 * store lost the records, every proxy is written again.
 */
export class FleetPublisher {
  readonly #options: FleetPublisherOptions;
  readonly #logger: Logger;
  readonly #dirty = new Set<string>();
  readonly #backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #failing = false;
  #stopped = false;

  constructor(options: FleetPublisherOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'fleet', replica: options.replica });
  }

  /** Writes every known proxy, then each change. */
  start(): void {
    this.#unsubscribe = this.#options.registry.onChange((id) => this.#mark([id]));
    this.#options.fleet.onLost((proxies) => this.#mark(proxies ?? this.#options.registry.ids()));
    this.#mark(this.#options.registry.ids());
  }

  /** Stops writing; the records themselves are deleted when the store closes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    clearTimeout(this.#timer);
    await this.#flushing;
  }

  get #delayMs(): number {
    return this.#options.delayMs ?? DEFAULT_DELAY_MS;
  }

  #mark(ids: string[]): void {
    for (const id of ids) this.#dirty.add(id);
    this.#schedule(this.#delayMs);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped || this.#timer || this.#flushing || this.#dirty.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flushing = this.#flush().finally(() => {
        this.#flushing = undefined;
        this.#schedule(this.#failing ? this.#backoff.next() : this.#delayMs);
      });
    }, delayMs);
    this.#timer.unref();
  }

  async #flush(): Promise<void> {
    const { registry, fleet, replica, controlPlane } = this.#options;
    const ids = [...this.#dirty];
    this.#dirty.clear();
    const records: { proxy: string; value: string }[] = [];
    // A proxy missing from the registry was pruned, and its record is deleted too.
    const removed: string[] = [];
    for (const id of ids) {
      const entry = registry.entry(id);
      if (entry) records.push({ proxy: id, value: encodeSharedProxy({ controlPlane, ...entry }) });
      else removed.push(id);
    }
    try {
      await fleet.publish(replica, records, removed);
      if (this.#failing) {
        this.#failing = false;
        this.#backoff.reset();
        this.#logger.info({ proxies: records.length }, 'fleet records shared again');
      }
    } catch (error) {
      for (const id of ids) this.#dirty.add(id);
      if (!this.#failing) {
        this.#failing = true;
        this.#logger.warn(
          { err: error, proxies: this.#dirty.size },
          'fleet records not shared, retrying',
        );
      }
    }
  }
}
