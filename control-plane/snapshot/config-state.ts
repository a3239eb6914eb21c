import type { Logger } from '../../common/logger.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { decodeRoute, decodeUpstream, parseResourceKey } from '../resources.js';
import type { KeyValue, RangeResult, WatchBatch } from '../store/store.js';

/**
 * The control plane's in-memory copy of every resource under the prefix, kept
 * equal to the store at `revision` by a full read followed by watch batches.
 */
export class ConfigState {
  #routes = new Map<string, Route>();
  #upstreams = new Map<string, Upstream>();
  #revision = 0;
  readonly #prefix: string;
  readonly #logger: Logger;

  constructor(prefix: string, logger: Logger) {
    this.#prefix = prefix;
    this.#logger = logger;
  }

  /** Store revision this state equals. */
  get revision(): number {
    return this.#revision;
  }

  /** Replaces the whole state with a full read of the prefix. */
  reset(range: RangeResult): void {
    this.#routes = new Map();
    this.#upstreams = new Map();
    for (const item of range.items) this.#put(item);
    this.#revision = range.revision;
  }

  /** Applies one committed transaction; batches at or below the current revision are ignored. */
  apply(batch: WatchBatch): boolean {
    if (batch.revision <= this.#revision) return false;

    for (const event of batch.events) {
      if (event.type === 'put') this.#put(event);
      else this.#delete(event.key);
    }
    this.#revision = batch.revision;
    return true;
  }

  /** Routes sorted by name. */
  routes(): Route[] {
    return [...this.#routes.values()].sort((a, b) => compare(a.name, b.name));
  }

  /** Upstreams sorted by name. */
  upstreams(): Upstream[] {
    return [...this.#upstreams.values()].sort((a, b) => compare(a.name, b.name));
  }

  #put(item: Pick<KeyValue, 'key' | 'value'>): void {
    const parsed = parseResourceKey(this.#prefix, item.key);
    if (!parsed) return;

    try {
      if (parsed.kind === 'route') {
        this.#routes.set(parsed.name, { ...decodeRoute(item.value), name: parsed.name });
      } else {
        this.#upstreams.set(parsed.name, { ...decodeUpstream(item.value), name: parsed.name });
      }
    } catch (error) {
      // A value written by another tool must not stop the rest of the config from serving.
      this.#logger.warn({ key: item.key, err: error }, 'stored value skipped');
      this.#delete(item.key);
    }
  }

  #delete(key: string): void {
    const parsed = parseResourceKey(this.#prefix, key);
    if (parsed?.kind === 'route') this.#routes.delete(parsed.name);
    if (parsed?.kind === 'upstream') this.#upstreams.delete(parsed.name);
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
