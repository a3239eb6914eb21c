import { formatConfigIssue, LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { parseResourceKey, type ResourceKind } from '../resources.js';
import type { KeyValue, RangeResult, WatchBatch } from '../store/store.js';
import {
  checkStoredResource,
  readStoredValue,
  respelledFields,
  type StoredResource,
} from './stored-value.js';

/** Options of {@link ConfigState}. */
export interface ConfigStateOptions {
  /**
   * Log each value that is not in stored form, once per key and modification revision, and
   * check it as `loomctl apply` would. Set it on the one long-lived state that follows the
   * store, so that short-lived reads do not repeat the lines.
   */
  reportValues?: boolean;
}

/**
 * The control plane's in-memory copy of every resource under the prefix, kept
 * equal to the store at `revision` by a full read followed by watch batches.
 * Every value is kept in stored form (see `readStoredValue`), whatever spelling
 * the store holds.
 */
export class ConfigState {
  #routes = new Map<string, Route>();
  #upstreams = new Map<string, Upstream>();
  #revision = 0;
  /** Modification revision of each key logged as not in stored form, with `reportValues`. */
  readonly #reported = new Map<string, number>();
  readonly #prefix: string;
  readonly #logger: Logger;
  readonly #reportValues: boolean;

  constructor(prefix: string, logger: Logger, options: ConfigStateOptions = {}) {
    this.#prefix = prefix;
    this.#logger = logger;
    this.#reportValues = options.reportValues ?? false;
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
    // A key deleted from the store is logged again if it returns. A skipped key that stays is not.
    if (this.#reported.size > 0) {
      const present = new Set(range.items.map((item) => item.key));
      for (const key of this.#reported.keys()) {
        if (!present.has(key)) this.#reported.delete(key);
      }
    }
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

  #put(item: KeyValue): void {
    const parsed = parseResourceKey(this.#prefix, item.key);
    if (!parsed) return;

    let resource: StoredResource;
    try {
      resource = readStoredValue(parsed.kind, parsed.name, item.value);
    } catch (error) {
      // A value written by another tool must not stop the rest of the config from serving.
      const logged = this.#reported.get(item.key) === item.modRevision;
      this.#delete(item.key);
      if (this.#reportValues && !logged) this.#reportSkipped(item, parsed, error);
      return;
    }
    if (resource.kind === 'route') this.#routes.set(parsed.name, resource.value);
    else this.#upstreams.set(parsed.name, resource.value);
    if (this.#reportValues) this.#report(item, resource);
  }

  /**
   * Logs a value that cannot be read, once per key and modification revision. The log line
   * carries the error's message, which names the field, without the stack.
   */
  #reportSkipped(
    item: KeyValue,
    resource: { kind: ResourceKind; name: string },
    error: unknown,
  ): void {
    this.#reported.set(item.key, item.modRevision);
    const { kind, name } = resource;
    this.#logger.warn(
      {
        key: item.key,
        modRevision: item.modRevision,
        code: error instanceof LoomError ? error.code : undefined,
        reason: error instanceof Error ? error.message : String(error),
        fix: `apply ${kind} "${name}" with loomctl, or run "loomctl delete ${kind} ${name}"`,
      },
      'stored value skipped',
    );
  }

  /**
   * Logs a value that is not in stored form, with the fields spelled differently, or with the
   * problems `loomctl apply` would report. It is served in stored form either way, and proxies
   * reject a snapshot they cannot build.
   *
   * NOTE: a value already in stored form is not checked, because that takes a router build per
   * value on every full read. `loomctl apply` checked every value it wrote, so only a value
   * written straight into the store in stored form can be invalid and pass unlogged.
   */
  #report(item: KeyValue, resource: StoredResource): void {
    if (this.#reported.get(item.key) === item.modRevision) return;

    const { kind } = resource;
    const { name } = resource.value;
    // The resource's name goes in `resourceName`, because pino writes the logger's own `name`
    // into every line.
    const fields = { key: item.key, kind, resourceName: name, modRevision: item.modRevision };
    try {
      const respelled = respelledFields(item.value, resource);
      if (respelled.length === 0) {
        this.#reported.delete(item.key);
        return;
      }
      this.#reported.set(item.key, item.modRevision);
      const issues = checkStoredResource(resource);
      if (issues.length === 0) {
        this.#logger.info({ ...fields, fields: respelled }, 'stored value served in stored form');
        return;
      }
      this.#logger.warn(
        {
          ...fields,
          fields: respelled,
          issues: issues.map(formatConfigIssue),
          fix: `apply a fixed ${kind} "${name}" with loomctl, or run "loomctl delete ${kind} ${name}"`,
        },
        'stored value invalid',
      );
    } catch (error) {
      // The value is served already, so a failed check must not stop the control plane.
      this.#logger.warn({ ...fields, err: error }, 'stored value check failed');
    }
  }

  #delete(key: string): void {
    this.#reported.delete(key);
    const parsed = parseResourceKey(this.#prefix, key);
    if (parsed?.kind === 'route') this.#routes.delete(parsed.name);
    if (parsed?.kind === 'upstream') this.#upstreams.delete(parsed.name);
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
