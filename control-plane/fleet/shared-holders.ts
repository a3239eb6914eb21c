import type { Logger } from '../../common/logger.js';
import { withTimeout } from '../../common/timers.js';
import type { FleetStore } from '../store/store.js';
import type { ProxyStream } from '../stream/proxy-registry.js';
import type { SharedHolder } from '../stream/snapshot-service.js';
import { decodeSharedProxy } from './fleet-records.js';

/**
 * How long one read of the shared records serves new streams, in milliseconds. After a
 * control-plane restart every proxy reconnects within a few seconds, and they share reads.
 */
const READ_MAX_AGE_MS = 500;

/**
 * Maximum wait for the shared records, in milliseconds, before a new stream is checked on this
 * replica alone. A frozen etcd fails a request only at its request timeout (5 s), and a proxy gives up
 * on a stream without response headers after its --control-plane-timeout.
 */
const READ_TIMEOUT_MS = 1_000;

/** Connected streams of other replicas, by proxy id. */
type Holders = Map<string, { controlPlane: string; address: string; instanceId: string }[]>;

/** Maximum number of rejected processes counted; past it the counts start again. */
const REJECTION_KEY_LIMIT = 1_024;

/**
 * Finds a proxy id's connected stream on another replica of the shared store, so that a
 * replica rejects a second process under that id as it rejects one on its own streams.
 * A record lags its replica by the publish delay (about 50 ms). A replica that died keeps
 * its records for up to the fleet lease (10 s), so a restarted proxy that moves to another
 * replica under its old id may be rejected until they expire, and its retries then pass.
 */
export class SharedHolders {
  readonly #fleet: FleetStore;
  readonly #replica: string;
  readonly #logger: Logger;
  #read: { startedAtMs: number; holders: Promise<Holders> } | undefined;
  #failureLogged = false;
  /** Rejections by proxy id and the rejected process's instance id and address. */
  readonly #rejections = new Map<string, number>();

  constructor(fleet: FleetStore, replica: string, logger: Logger) {
    this.#fleet = fleet;
    this.#replica = replica;
    this.#logger = logger;
  }

  /**
   * Returns the connected stream of `id` on another replica that comes from another process
   * than `stream`, or undefined. When the store cannot be read within `READ_TIMEOUT_MS` it
   * returns undefined, so an unreachable or frozen etcd does not keep proxies from connecting.
   */
  async find(id: string, stream: ProxyStream): Promise<SharedHolder | undefined> {
    let holders: Holders;
    try {
      holders = await withTimeout(this.#holders(), READ_TIMEOUT_MS, 'proxy records read');
    } catch (error) {
      if (!this.#failureLogged) {
        this.#failureLogged = true;
        this.#logger.warn(
          { err: error },
          'proxy records of other control planes not read; duplicate proxy ids are checked ' +
            'on this control plane only',
        );
      }
      return undefined;
    }
    this.#failureLogged = false;
    for (const holder of holders.get(id) ?? []) {
      // Shared records carry no peer host, so a proxy without an instance id is matched by
      // its reported address alone.
      const same =
        holder.instanceId !== '' && stream.instanceId !== ''
          ? holder.instanceId === stream.instanceId
          : holder.address === stream.address;
      if (!same) {
        const attempt = this.#count(id, stream);
        return { controlPlane: holder.controlPlane, address: holder.address, attempt };
      }
    }
    return undefined;
  }

  #count(id: string, stream: ProxyStream): number {
    const key = `${id}\n${stream.instanceId}\n${stream.address}`;
    const attempt = (this.#rejections.get(key) ?? 0) + 1;
    if (this.#rejections.size >= REJECTION_KEY_LIMIT) this.#rejections.clear();
    this.#rejections.set(key, attempt);
    return attempt;
  }

  #holders(): Promise<Holders> {
    const now = Date.now();
    if (this.#read && now - this.#read.startedAtMs < READ_MAX_AGE_MS) return this.#read.holders;

    const holders = this.#fleet.read().then((records) => {
      const connected: Holders = new Map();
      for (const record of records) {
        // An unconfirmed record may belong to a replica that is gone, with no open stream.
        if (record.replica === this.#replica || !record.confirmed) continue;
        const shared = decodeSharedProxy(record.value);
        if (!shared?.state.connected || shared.state.id !== record.proxy) continue;
        const list = connected.get(record.proxy) ?? [];
        list.push({
          controlPlane: shared.controlPlane,
          address: shared.state.address,
          instanceId: shared.state.instanceId,
        });
        connected.set(record.proxy, list);
      }
      return connected;
    });
    this.#read = { startedAtMs: now, holders };
    // A failed read is not reused: the next stream reads again.
    holders.catch(() => {
      if (this.#read?.holders === holders) this.#read = undefined;
    });
    return holders;
  }
}
