import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Etcd3,
  Range,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRangeResponse,
  type IRequestOp,
  type IResponseOp,
  type ITxnRequest,
} from 'etcd3';
import { pino } from 'pino';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import {
  encodeAcceptedVersion,
  movesAcceptedForward,
  parseAcceptedVersion,
} from './accepted-record.js';
import { etcdClientOptions, type EtcdTlsFiles } from './etcd-client.js';
import { isRevisionOutOfRange, isTransactionTooLarge, toStoreError } from './etcd-errors.js';
import { EtcdFleet } from './etcd-fleet.js';
import { EtcdWatch, type EtcdWatchContext } from './etcd-watch.js';
import {
  directoryPrefixes,
  isMetaKey,
  META_SEGMENT,
  validateCommit,
  validateWatchStart,
} from './key-space.js';
import type {
  AcceptedContent,
  AcceptedVersion,
  CommitOptions,
  KeyValue,
  RangeResult,
  Store,
  StoreOperation,
  Watch,
  WatchHandlers,
} from './store.js';

/** Options of {@link EtcdStore}. */
export interface EtcdStoreOptions {
  /** Client URLs with scheme, such as `http://127.0.0.1:2379`. */
  endpoints: string[];
  /**
   * Key prefix the store owns; it must end with `/`. Every written key must be
   * under it, and the store keeps its bookkeeping keys under `<prefix>__meta/`.
   * Defaults to `/loom/`.
   */
  prefix?: string;
  logger?: Logger;
  /** Deadline of each unary request, in milliseconds. Defaults to 5000. */
  requestTimeoutMs?: number;
  /**
   * Maximum wait between attempts to re-establish a broken watch stream, in
   * milliseconds. Defaults to 5000.
   */
  watchBackoffMaxMs?: number;
  /**
   * Interval of the check that a watch is still delivering, in milliseconds;
   * the check also probes whether etcd is reachable. Defaults to 10000.
   */
  watchCheckIntervalMs?: number;
  /** TLS to etcd; set for `https://` endpoints. */
  tls?: EtcdTlsFiles;
  /** etcd user and password, when etcd has authentication enabled. */
  auth?: { username: string; password: string };
  /** Called each time a broken watch stream is re-established; for metrics. */
  onWatchReconnect?: () => void;
  /** Called each time the delivery check finds a stalled watch; for metrics. */
  onWatchStall?: () => void;
  /** Maximum number of keys one range request returns. Defaults to 10,000. */
  rangePageSize?: number;
  /** Interval of the check that the fleet records' lease exists, in milliseconds; default 5,000. */
  fleetLeaseCheckMs?: number;
}

const LAST_WRITE = 'last-write';
/**
 * Keys per range request. Each page is one gRPC message with its own deadline,
 * so neither the client's receive limit nor one request's timeout bounds the
 * size of a prefix.
 */
const DEFAULT_RANGE_PAGE_SIZE = 10_000;
/**
 * Deadline added to a commit per operation, in milliseconds, so that 100,000
 * operations get 5 + 10 s. NOTE: an estimate from one machine, where 100,000
 * puts took about 9 s on 2 heavily loaded cores.
 */
const COMMIT_MS_PER_OPERATION = 0.1;
const GENERATION = 'generation';
const ACCEPTED = 'accepted';
/**
 * Maximum conditional writes of the generation key in one `epoch()` call. A write fails when
 * another client wrote the key since the read. A usable value read back then ends the call,
 * so only a client that keeps writing blank values makes it use up these writes.
 */
const GENERATION_ATTEMPTS = 4;
/**
 * Maximum read-and-compare rounds of `recordAccepted`. A round is lost only when another
 * control plane moved the record forward meanwhile. A writer stops once the record is at
 * its version or newer, so it loses at most one round per concurrent writer of a lower
 * version.
 */
const RECORD_ACCEPTED_ATTEMPTS = 16;
/**
 * Maximum bookkeeping writes (accepted versions and fleet records) that `range` looks back
 * over at the end of etcd's history. Each replica writes the accepted record once per
 * version and its fleet records about once per version and per proxy connect or disconnect,
 * so a longer run takes thousands of proxy reconnects with no configuration change.
 */
const RECORD_WALK_LIMIT = 4_096;
/**
 * Revisions the walk checks per transaction at first, three reads each. etcd allows 128
 * operations per transaction by default (`--max-txn-ops`); when it rejects a batch, later
 * ones are half as large.
 */
const WALK_BATCH = 32;

type Reachability = 'unknown' | 'reachable' | 'unreachable';

/**
 * A {@link Store} on etcd v3, through the etcd3 client.
 *
 * Conditional commits: every commit also puts an empty marker key
 * `<dir>__meta/last-write` for each directory `<dir>` (a key prefix ending
 * with `/`, from the store prefix down) of every key it writes, in the same
 * transaction. A marker's mod revision is therefore the revision of the last
 * commit that wrote any key under its directory, deletes included, which a
 * comparison of live keys cannot see. `commit` with `ifRevision` R and
 * `prefix` P succeeds only if `P__meta/last-write` and every key under P have
 * a mod revision below R + 1. The second comparison also catches puts by
 * other etcd clients; their deletes stay invisible.
 *
 * NOTE: the generation key (below) is under the prefix too, so the first
 * `epoch()` call on an empty etcd makes a commit conditional on an earlier
 * revision fail once. The control plane reads the epoch before its first read.
 *
 * Epoch: the cluster id from the response header, in hex, and a random UUID
 * kept at `<prefix>__meta/generation`. An `epoch()` call that finds no key
 * creates the UUID with a put that only succeeds while the key does not exist,
 * and otherwise reads back the key that another caller created first. So a
 * wiped etcd, or one where `etcdctl del --prefix` deleted the whole prefix, gets
 * one new epoch. A restored etcd keeps the key of its backup until `renewEpoch`
 * replaces it. `range` reads the key at its own revision and returns the epoch
 * with the keys, and a watch of the prefix fails when the key is deleted or
 * replaced (see `EtcdWatch`).
 *
 * An empty or whitespace-only value counts as a missing key: `range` returns no
 * epoch, and `epoch()` replaces the value with a new UUID, conditional on the
 * key's mod revision, and logs a warning with the key. Such a value comes from
 * a hand-written put or a hand-edited backup, never from Loom, and an epoch that
 * ends in nothing cannot tell two histories apart. Rejecting it would keep every
 * replica unready until an operator deleted the key, and that repair starts a new
 * epoch anyway. Replacing the value has the same effect: the replicas agree on one
 * new epoch, and proxies accept it as they do after a prefix delete.
 *
 * Marker writes take revisions like any write; `range` and `watch` hide the
 * `__meta` keys.
 *
 * Accepted version: `<prefix>__meta/accepted` contains the epoch, version and content hash
 * of the newest snapshot a proxy acked, as JSON. Its write takes a revision too, but
 * conditional commits ignore the key, so an ack never makes an apply conflict. The
 * snapshot itself is rebuilt from the keys at that revision, which etcd keeps until it
 * compacts it.
 */
export class EtcdStore implements Store {
  readonly #client: Etcd3;
  /** Watches have their own connection, replaced when a watch stalls on it. */
  #watchClient: Etcd3;
  readonly #clientOptions: IOptions;
  readonly #watchCheckIntervalMs: number;
  readonly #onWatchReconnect: (() => void) | undefined;
  readonly #onWatchStall: (() => void) | undefined;
  readonly #endpoints: string[];
  readonly #root: string;
  readonly #logger: Logger;
  readonly #watches = new Set<EtcdWatch>();
  readonly #requestTimeoutMs: number;
  readonly #rangePageSize: number;
  readonly fleet: EtcdFleet;
  #walkBatch = WALK_BATCH;
  #reachability: Reachability = 'unknown';
  /** Deadlines of the commits in flight, as `Date.now()` times. */
  readonly #commitDeadlines: number[] = [];

  /**
   * Creates the client. No request is sent until the first call.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when there is no endpoint, the
   *   prefix does not end with `/`, or the range page size is not a positive integer.
   */
  constructor(options: EtcdStoreOptions) {
    const root = options.prefix ?? '/loom/';
    if (options.endpoints.length === 0) {
      throw new LoomError('LOOM_INVALID_ARGUMENT', 'etcd store needs at least one endpoint');
    }
    if (!root.endsWith('/')) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `etcd store prefix must end with "/" (got ${JSON.stringify(root)})`,
      );
    }
    const rangePageSize = options.rangePageSize ?? DEFAULT_RANGE_PAGE_SIZE;
    if (!Number.isInteger(rangePageSize) || rangePageSize < 1) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `etcd range page size must be a positive integer (got ${rangePageSize})`,
      );
    }

    this.#endpoints = [...options.endpoints];
    this.#root = root;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.#rangePageSize = rangePageSize;
    this.#logger = (options.logger ?? pino({ enabled: false })).child({ component: 'etcd' });
    this.#watchCheckIntervalMs = options.watchCheckIntervalMs ?? 10_000;
    this.#onWatchReconnect = options.onWatchReconnect;
    this.#onWatchStall = options.onWatchStall;
    this.#clientOptions = etcdClientOptions({
      endpoints: this.#endpoints,
      requestTimeoutMs: this.#requestTimeoutMs,
      watchBackoffMaxMs: options.watchBackoffMaxMs ?? 5000,
      tls: options.tls,
      auth: options.auth,
    });
    this.#client = new Etcd3(this.#clientOptions);
    this.#watchClient = new Etcd3(this.#clientOptions);
    this.fleet = new EtcdFleet({
      client: this.#client,
      metaDirectory: this.#metaKey(this.#root, ''),
      logger: this.#logger,
      request: (operation, call) => this.#request(operation, call),
      leaseCheckMs: options.fleetLeaseCheckMs,
    });
  }

  /**
   * True while the last request to etcd succeeded; false before the first one
   * and after a request failed as unreachable. Watches probe etcd every
   * `watchCheckIntervalMs`, so the value is never older than that while one runs.
   */
  get reachable(): boolean {
    return this.#reachability === 'reachable';
  }

  /**
   * Returns the epoch, creating the generation key when it is missing and replacing its
   * value when it is unusable (see the class comment). Each write is conditional on the
   * key's mod revision as read, so concurrent callers agree on one value, because a caller
   * whose write fails reads back the value that won.
   *
   * @throws LoomError `LOOM_STORE_CORRUPT` when the key is still missing or unusable after
   *   `GENERATION_ATTEMPTS` writes, because other clients keep writing unusable values.
   */
  async epoch(): Promise<string> {
    const key = Buffer.from(this.#metaKey(this.#root, GENERATION));
    const read = await this.#request('epoch', () => this.#client.kv.range({ key }));
    let clusterId = read.header.cluster_id;
    let kv = read.kvs[0];
    for (let writes = 0; ; writes++) {
      const stored = kv?.value.toString();
      if (stored !== undefined && isUsableGeneration(stored)) {
        return formatEpoch(clusterId, stored);
      }
      if (writes === GENERATION_ATTEMPTS) break;

      const generation = randomUUID();
      // A missing key has mod revision 0 in an etcd comparison.
      const modRevision = kv?.mod_revision ?? '0';
      const response = await this.#request('epoch', () =>
        this.#client.kv.txn({
          compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: modRevision }],
          success: [{ request_put: { key, value: Buffer.from(generation) } }],
          failure: [{ request_range: { key } }],
        }),
      );
      if (response.succeeded) {
        this.#logGenerationWrite(stored, generation, Number(response.header.revision));
        return formatEpoch(response.header.cluster_id, generation);
      }
      // Another control plane, or another client, wrote the key since the read.
      clusterId = response.header.cluster_id;
      kv = response.responses[0]?.response_range.kvs[0];
    }
    throw new LoomError(
      'LOOM_STORE_CORRUPT',
      `etcd at ${this.#endpoints.join(',')} has no usable generation key ` +
        `${this.#metaKey(this.#root, GENERATION)} after ${GENERATION_ATTEMPTS} writes; ` +
        'stop the client that writes it',
    );
  }

  #logGenerationWrite(stored: string | undefined, generation: string, revision: number): void {
    const key = this.#metaKey(this.#root, GENERATION);
    if (stored === undefined) {
      this.#logger.info({ key, generation, revision }, 'etcd generation created');
      return;
    }
    this.#logger.warn(
      { key, stored: stored.slice(0, 200), generation, revision },
      'etcd generation replaced because the stored value is blank',
    );
  }

  async renewEpoch(stale: string): Promise<string> {
    const key = Buffer.from(this.#metaKey(this.#root, GENERATION));
    const staleGeneration = stale.slice(stale.indexOf('-') + 1);
    const generation = randomUUID();
    // Only the first control plane to notice replaces the generation; the rest adopt it.
    const response = await this.#request('renew epoch', () =>
      this.#client.kv.txn({
        compare: [{ key, target: 'Value', result: 'Equal', value: Buffer.from(staleGeneration) }],
        success: [{ request_put: { key, value: Buffer.from(generation) } }],
        failure: [],
      }),
    );
    if (response.succeeded) {
      this.#logger.warn({ stale, generation }, 'etcd generation renewed');
    }
    return this.epoch();
  }

  /**
   * Reads every key under `prefix` in pages of at most `rangePageSize` keys.
   * The first page is read with the generation key that sets `epoch`, and every
   * later page at the first page's revision, so the result is one consistent
   * revision however many pages it takes.
   *
   * The returned revision skips the bookkeeping writes (accepted versions, fleet records
   * and the creation of the generation key) at the end of etcd's history (see
   * `#revisionBeforeRecords`). A control plane that reads after proxies acked thus gets the
   * version they acked, not the revision of a record. Replicas that read an empty etcd
   * before and after one of them created the generation key thus serve one version. A
   * replaced generation value counts as a change: a watch that starts before it fails as
   * an epoch change (see `EtcdWatch`).
   *
   * @throws LoomError `LOOM_STORE_UNAVAILABLE`, retryable, when etcd compacts
   *   that revision before the last page is read.
   */
  async range(prefix: string): Promise<RangeResult> {
    const range = Range.prefix(prefix);
    const limit = this.#rangePageSize;
    const generationKey = Buffer.from(this.#metaKey(this.#root, GENERATION));
    // One transaction reads the first page and the generation key at the same revision.
    const first = await this.#request('range', () =>
      this.#client.kv.txn({
        compare: [],
        success: [
          { request_range: { key: range.start, range_end: range.end, limit } },
          { request_range: { key: generationKey } },
          { request_range: { key: Buffer.from(this.#metaKey(this.#root, ACCEPTED)) } },
          { request_range: { key: Buffer.from(this.fleet.markerKey), keys_only: true } },
        ],
        failure: [],
      }),
    );
    const revision = first.header.revision;
    const kvs = await this.#readLaterPages(prefix, first.responses[0].response_range, revision);

    const stored = first.responses[1].response_range.kvs[0]?.value.toString();
    const epoch =
      stored === undefined || !isUsableGeneration(stored)
        ? undefined
        : formatEpoch(first.header.cluster_id, stored);
    const bookkeeping =
      lastModRevision(first.responses[2]) === Number(revision) ||
      lastModRevision(first.responses[3]) === Number(revision) ||
      createdAt(first.responses[1]) === Number(revision);
    const configRevision = bookkeeping
      ? await this.#revisionBeforeRecords(Number(revision))
      : Number(revision);

    const items = kvs.filter((kv) => !isMetaKey(kv.key.toString(), this.#root)).map(toKeyValue);
    return { revision: configRevision, items, epoch };
  }

  /**
   * Returns the revision before the run of bookkeeping writes that ends at `head`. Each of
   * those writes is a transaction of the accepted key alone, of fleet records and the
   * fleet write marker, or of the generation key's creation, so every configuration key is
   * the same at the returned revision as at `head`. A revision at which the accepted key or
   * the marker has that revision as its mod revision, or the generation key as its create
   * revision, is such a write. Revisions are checked in batches of one transaction each.
   * The walk stops after `RECORD_WALK_LIMIT` revisions, or before a compacted revision, and
   * returns the revision it reached, which is still correct but later than needed. The
   * returned revision is never compacted, so a watch can start after it.
   *
   * NOTE: fleet records that etcd deletes when a replica's lease expires take a revision
   * without the marker, so the walk stops there and a replica that reads afterwards
   * numbers the same configuration with a later version. Proxies then apply it once more.
   */
  async #revisionBeforeRecords(head: number): Promise<number> {
    let revision = head - 1;
    let checked = 1;
    let batch = this.#walkBatch;
    while (checked < RECORD_WALK_LIMIT && revision > 0) {
      const revisions = Array.from(
        { length: Math.min(batch, revision, RECORD_WALK_LIMIT - checked) },
        (_, index) => revision - index,
      );
      let bookkeeping: boolean[];
      try {
        bookkeeping = await this.#bookkeepingAt(revisions);
      } catch (error) {
        if (isTransactionTooLarge(error) && batch > 1) {
          batch = Math.ceil(batch / 2);
          this.#walkBatch = batch;
          continue;
        }
        if (!isRevisionOutOfRange(error instanceof LoomError ? error.cause : error)) throw error;
        // The revision after it was read, or is `head`, and it is a record write too.
        if (revisions.length === 1) return revision + 1;
        // Some revision of the batch is compacted: the rest of the walk goes one at a time.
        batch = 1;
        continue;
      }
      const other = bookkeeping.indexOf(false);
      if (other !== -1) return revisions[other];
      revision -= revisions.length;
      checked += revisions.length;
    }
    return revision;
  }

  /** Tells for each of `revisions` whether it was a bookkeeping write, in one transaction. */
  async #bookkeepingAt(revisions: number[]): Promise<boolean[]> {
    const accepted = Buffer.from(this.#metaKey(this.#root, ACCEPTED));
    const marker = Buffer.from(this.fleet.markerKey);
    const generation = Buffer.from(this.#metaKey(this.#root, GENERATION));
    const response = await this.#request('range', () =>
      this.#client.kv.txn({
        compare: [],
        success: revisions.flatMap((revision): IRequestOp[] => [
          { request_range: { key: accepted, keys_only: true, revision: String(revision) } },
          { request_range: { key: marker, keys_only: true, revision: String(revision) } },
          { request_range: { key: generation, keys_only: true, revision: String(revision) } },
        ]),
        failure: [],
      }),
    );
    return revisions.map(
      (revision, index) =>
        lastModRevision(response.responses[3 * index]) === revision ||
        lastModRevision(response.responses[3 * index + 1]) === revision ||
        createdAt(response.responses[3 * index + 2]) === revision,
    );
  }

  /**
   * Reads the pages after `first` at `revision` and returns every key read, `first`'s
   * included.
   */
  async #readLaterPages(
    prefix: string,
    first: IRangeResponse,
    revision: string,
  ): Promise<IKeyValue[]> {
    const end = Range.prefix(prefix).end;
    const kvs = [...first.kvs];
    let more = first.more;
    let pages = 1;
    while (more) {
      // The next page starts at the smallest key after the last one read.
      const start = Buffer.concat([kvs[kvs.length - 1].key, Buffer.from([0])]);
      const page = await this.#readPage(start, end, this.#rangePageSize, revision);
      kvs.push(...page.kvs);
      more = page.more;
      pages += 1;
    }
    if (pages > 1) {
      this.#logger.debug({ prefix, revision, pages, keys: kvs.length }, 'range read in pages');
    }
    return kvs;
  }

  async acceptedVersion(): Promise<AcceptedVersion | undefined> {
    const key = Buffer.from(this.#metaKey(this.#root, ACCEPTED));
    const read = await this.#request('accepted version read', () => this.#client.kv.range({ key }));
    const value = read.kvs[0]?.value.toString();
    return value === undefined ? undefined : this.#parseAccepted(value);
  }

  /**
   * Writes the accepted version with a compare on the key's mod revision and on the
   * generation, so that neither a concurrent write by another control plane nor a renewed
   * epoch is overwritten. `content` is not stored: `readAcceptedContent` reads the keys at
   * the version's revision instead.
   */
  async recordAccepted(accepted: AcceptedVersion, _content: Uint8Array): Promise<boolean> {
    const key = Buffer.from(this.#metaKey(this.#root, ACCEPTED));
    const generationKey = Buffer.from(this.#metaKey(this.#root, GENERATION));
    for (let attempt = 1; attempt <= RECORD_ACCEPTED_ATTEMPTS; attempt++) {
      const read = await this.#request('accepted version read', () =>
        this.#client.kv.txn({
          compare: [],
          success: [{ request_range: { key } }, { request_range: { key: generationKey } }],
          failure: [],
        }),
      );
      const generation = read.responses[1].response_range.kvs[0]?.value.toString();
      if (generation === undefined || !isUsableGeneration(generation)) return false;
      if (formatEpoch(read.header.cluster_id, generation) !== accepted.epoch) return false;
      const storedKv = read.responses[0].response_range.kvs[0];
      const stored = storedKv && this.#parseAccepted(storedKv.value.toString());
      if (!movesAcceptedForward(stored, accepted)) return false;

      const written = await this.#request('accepted version write', () =>
        this.#client.kv.txn({
          compare: [
            { key, target: 'Mod', result: 'Equal', mod_revision: storedKv?.mod_revision ?? 0 },
            {
              key: generationKey,
              target: 'Value',
              result: 'Equal',
              value: Buffer.from(generation),
            },
          ],
          success: [{ request_put: { key, value: Buffer.from(encodeAcceptedVersion(accepted)) } }],
          failure: [],
        }),
      );
      if (written.succeeded) return true;
    }
    return false;
  }

  /**
   * Reads the keys under `prefix` at the accepted version's revision, in pages. Returns
   * `compacted` when etcd no longer keeps that revision, including when it compacts it
   * between two pages, and `missing` when the revision is past etcd's current one, as after
   * a restore from an older backup.
   */
  async readAcceptedContent(prefix: string, accepted: AcceptedVersion): Promise<AcceptedContent> {
    const range = Range.prefix(prefix);
    const revision = String(accepted.version);
    try {
      const first = await this.#request('accepted version range', () =>
        this.#client.kv.range({
          key: range.start,
          range_end: range.end,
          limit: this.#rangePageSize,
          revision,
        }),
      );
      const kvs = await this.#readLaterPages(prefix, first, revision);
      const items = kvs.filter((kv) => !isMetaKey(kv.key.toString(), this.#root)).map(toKeyValue);
      return { kind: 'history', range: { revision: accepted.version, items } };
    } catch (error) {
      const cause = error instanceof LoomError ? error.cause : error;
      const compaction = cause instanceof LoomError ? cause.cause : cause;
      if (!isRevisionOutOfRange(cause) && !isRevisionOutOfRange(compaction)) throw error;
    }

    const head = await this.#request('accepted version range', () =>
      this.#client.kv.range({ key: Buffer.from(this.#root), count_only: true }),
    );
    const storeRevision = Number(head.header.revision);
    return accepted.version <= storeRevision
      ? { kind: 'compacted', storeRevision }
      : { kind: 'missing' };
  }

  #parseAccepted(value: string): AcceptedVersion | undefined {
    const parsed = parseAcceptedVersion(value);
    if (parsed === undefined) {
      this.#logger.warn(
        { key: this.#metaKey(this.#root, ACCEPTED), value: value.slice(0, 200) },
        'stored accepted version skipped',
      );
    }
    return parsed;
  }

  /** Reads one page after the first at `revision`. */
  async #readPage(
    start: Buffer,
    end: Buffer,
    limit: number,
    revision: string,
  ): Promise<IRangeResponse> {
    try {
      return await this.#request('range', () =>
        this.#client.kv.range({ key: start, range_end: end, limit, revision }),
      );
    } catch (error) {
      if (!isRevisionOutOfRange(error instanceof LoomError ? error.cause : error)) throw error;

      throw new LoomError(
        'LOOM_STORE_UNAVAILABLE',
        `etcd at ${this.#endpoints.join(',')} compacted revision ${revision} while a range ` +
          'was read in pages; read it again',
        { cause: error, retryable: true },
      );
    }
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    validateWatchStart(fromRevision);

    const context: EtcdWatchContext = {
      client: this.#client,
      watchClient: this.#watchClient,
      endpoints: this.#endpoints,
      root: this.#root,
      generationKey: this.#metaKey(this.#root, GENERATION),
      logger: this.#logger,
      checkIntervalMs: this.#watchCheckIntervalMs,
      cancelTimeoutMs: this.#requestTimeoutMs,
      lastWriteRevision: (directory) => this.#lastWriteRevision(directory),
      onStall: (client) => {
        this.#onWatchStall?.();
        this.#replaceWatchClient(client);
      },
      onReconnect: this.#onWatchReconnect,
      // etcd may be back from a restore of a backup, with old fleet records of this process.
      onStreamBack: () => this.fleet.checkSoon(),
    };
    const watch = new EtcdWatch(context, prefix, fromRevision, handlers);
    for (const previous of this.#watches) {
      if (previous.stopped) {
        this.#watches.delete(previous);
      }
    }
    this.#watches.add(watch);
    return {
      cancel: async () => {
        this.#watches.delete(watch);
        await watch.cancel();
      },
    };
  }

  get commitsInFlight(): number {
    return this.#commitDeadlines.length;
  }

  get commitDeadline(): number | undefined {
    return this.#commitDeadlines.length === 0 ? undefined : Math.max(...this.#commitDeadlines);
  }

  async commit(operations: StoreOperation[], options?: CommitOptions): Promise<number> {
    // etcd needs time in proportion to a transaction's size to receive, persist
    // and apply it, so a large apply gets a longer deadline than other requests.
    const deadline =
      Date.now() + this.#requestTimeoutMs + operations.length * COMMIT_MS_PER_OPERATION;
    this.#commitDeadlines.push(deadline);
    try {
      return await this.#commit(operations, deadline, options);
    } finally {
      this.#commitDeadlines.splice(this.#commitDeadlines.indexOf(deadline), 1);
    }
  }

  async #commit(
    operations: StoreOperation[],
    deadline: number,
    options?: CommitOptions,
  ): Promise<number> {
    const { ifRevision, checkPrefix = this.#root } = validateCommit(
      operations,
      options,
      this.#root,
    );

    const request: ITxnRequest = {
      compare: ifRevision === undefined ? [] : this.#unchangedSince(checkPrefix, ifRevision),
      success: [...operations.map(toRequestOp), ...this.#markerPuts(operations)],
      failure: this.#lastWriteReads(checkPrefix),
    };
    // NOTE: a commit that fails as unreachable after etcd received it may have
    // been applied; the caller cannot tell without reading again.
    const response = await this.#request('commit', () =>
      this.#client.kv.txn(request, { deadline }),
    );

    if (!response.succeeded) {
      const modified = Math.max(...response.responses.map(lastModRevision));
      throw new LoomError(
        'LOOM_VERSION_CONFLICT',
        `keys under "${checkPrefix}" were modified at revision ${modified}, after the expected ` +
          `revision ${ifRevision}; read them again and retry`,
      );
    }
    return Number(response.header.revision);
  }

  /**
   * Compares that nothing under `prefix` changed after `revision`: the marker
   * catches commits through this store, deletes included, and the range
   * comparison catches puts by other etcd clients.
   */
  #unchangedSince(prefix: string, revision: number): ICompare[] {
    const marker = Buffer.from(this.#metaKey(prefix, LAST_WRITE));
    return [
      { key: marker, target: 'Mod', result: 'Less', mod_revision: revision + 1 },
      ...this.#comparedRanges(prefix).map(([start, end]): ICompare => ({
        key: start,
        range_end: end,
        target: 'Mod',
        result: 'Less',
        mod_revision: revision + 1,
      })),
    ];
  }

  /** Reads, when a comparison fails, the marker and the last-modified key under `prefix`. */
  #lastWriteReads(prefix: string): IRequestOp[] {
    return [
      { request_range: { key: Buffer.from(this.#metaKey(prefix, LAST_WRITE)), keys_only: true } },
      ...this.#comparedRanges(prefix).map(([start, end]): IRequestOp => ({
        request_range: {
          key: start,
          range_end: end,
          sort_target: 'Mod',
          sort_order: 'Descend',
          limit: 1,
          keys_only: true,
        },
      })),
    ];
  }

  /**
   * Returns the key ranges under `prefix` that a conditional commit compares: all of it
   * except the bookkeeping keys (the accepted version, the fleet records and their write
   * marker, the generation key), because acks, proxy connections and the first read of a
   * store move them and they are no part of the configuration. `range` does not count their
   * writes as versions either.
   */
  #comparedRanges(prefix: string): [Buffer, Buffer][] {
    const range = Range.prefix(prefix);
    const accepted = Buffer.from(this.#metaKey(this.#root, ACCEPTED));
    const marker = Buffer.from(this.fleet.markerKey);
    const records = Range.prefix(this.fleet.recordsDirectory);
    const generation = Buffer.from(this.#metaKey(this.#root, GENERATION));
    // Sorted, as etcd orders keys: "accepted" < "fleet-write" < "fleet/" < "generation".
    const excluded: [Buffer, Buffer][] = [
      [accepted, afterKey(accepted)],
      [marker, afterKey(marker)],
      [records.start, records.end],
      [generation, afterKey(generation)],
    ];
    const compared: [Buffer, Buffer][] = [];
    let start = range.start;
    for (const [from, to] of excluded) {
      if (Buffer.compare(from, start) < 0 || Buffer.compare(to, range.end) > 0) continue;
      if (Buffer.compare(start, from) < 0) compared.push([start, from]);
      start = to;
    }
    if (Buffer.compare(start, range.end) < 0) compared.push([start, range.end]);
    return compared;
  }

  /**
   * Cancels every watch and closes the client. Waits up to one request timeout
   * for etcd to confirm the cancellations.
   */
  async close(): Promise<void> {
    await this.fleet.close();
    // A watch still attached when the client closes makes etcd3 retry its
    // stream forever, so every watch is detached first.
    const cancellations = Promise.all([...this.#watches].map((watch) => watch.cancel()));
    this.#watches.clear();
    const timeout = new AbortController();
    const timer = sleep(this.#requestTimeoutMs, undefined, { signal: timeout.signal });
    await Promise.race([cancellations, timer.catch(() => undefined)]);
    timeout.abort();
    this.#client.close();
    this.#watchClient.close();
    this.#logger.info({ endpoints: this.#endpoints }, 'etcd store closed');
  }

  #markerPuts(operations: StoreOperation[]): IRequestOp[] {
    const directories = new Set<string>();
    for (const operation of operations) {
      for (const directory of directoryPrefixes(operation.key, this.#root)) {
        directories.add(directory);
      }
    }
    return [...directories].map((directory) => ({
      request_put: {
        key: Buffer.from(this.#metaKey(directory, LAST_WRITE)),
        value: Buffer.alloc(0),
      },
    }));
  }

  /** Reads the revision of the last commit under `directory`, or 0 when there was none. */
  async #lastWriteRevision(directory: string): Promise<number> {
    const key = Buffer.from(this.#metaKey(directory, LAST_WRITE));
    const response = await this.#request('watch check', () =>
      this.#client.kv.range({ key, keys_only: true }),
    );
    return Number(response.kvs[0]?.mod_revision ?? 0);
  }

  /**
   * Fails every watch on the stalled client's connection and moves later
   * watches to a new client, so that a restarted watch does not reuse the
   * connection that stopped delivering.
   */
  #replaceWatchClient(stalled: Etcd3): void {
    if (stalled !== this.#watchClient) return;

    this.#watchClient = new Etcd3(this.#clientOptions);
    const failing = [...this.#watches].filter((watch) => watch.usesClient(stalled));
    for (const watch of failing) watch.failStalled();
    // A cancellation sent on the stalled connection may never be confirmed.
    const detached = Promise.all(failing.map((watch) => watch.cancel()));
    const timeout = sleep(this.#requestTimeoutMs, undefined, { ref: false });
    void Promise.race([detached, timeout]).then(() => stalled.close());
    this.#logger.warn({ endpoints: this.#endpoints }, 'etcd watch connection replaced');
  }

  #metaKey(directory: string, name: string): string {
    return `${directory}${META_SEGMENT}/${name}`;
  }

  /** Runs one etcd call, converts its errors, and logs changes of reachability. */
  async #request<T>(operation: string, call: () => Promise<T>): Promise<T> {
    try {
      const result = await call();
      this.#setReachability('reachable');
      return result;
    } catch (error) {
      const storeError = toStoreError(error, this.#endpoints, operation);
      if (storeError.retryable) {
        this.#setReachability('unreachable', storeError);
      }
      throw storeError;
    }
  }

  #setReachability(next: Reachability, error?: Error): void {
    const from = this.#reachability;
    if (from === next) {
      return;
    }

    this.#reachability = next;
    if (next === 'unreachable') {
      this.#logger.warn({ endpoints: this.#endpoints, err: error }, 'etcd unreachable');
    } else {
      this.#logger.info({ endpoints: this.#endpoints, from }, 'etcd connected');
    }
  }
}

/**
 * False for a generation value that is empty or only whitespace, as `etcdctl put KEY ""`
 * or a hand-edited backup leaves it.
 */
function isUsableGeneration(value: string): boolean {
  return value.trim() !== '';
}

/** Formats an epoch as the cluster id in hex and the generation UUID. */
function formatEpoch(clusterId: string, generation: string): string {
  return `${BigInt(clusterId).toString(16).padStart(16, '0')}-${generation}`;
}

function toRequestOp(operation: StoreOperation): IRequestOp {
  const key = Buffer.from(operation.key);
  if (operation.type === 'put') {
    return { request_put: { key, value: Buffer.from(operation.value) } };
  }
  return { request_delete_range: { key } };
}

function toKeyValue(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    modRevision: Number(kv.mod_revision),
  };
}

/** Returns the smallest key after `key`. */
function afterKey(key: Buffer): Buffer {
  return Buffer.concat([key, Buffer.from([0])]);
}

function lastModRevision(response: IResponseOp): number {
  return Number(response.response_range.kvs[0]?.mod_revision ?? 0);
}

/**
 * Returns the revision at which the first key of a range was written in its first version,
 * or 0 when the key is missing or a later write replaced its value.
 */
function createdAt(response: IResponseOp): number {
  const kv = response.response_range.kvs[0];
  return kv === undefined || Number(kv.version) !== 1 ? 0 : Number(kv.mod_revision);
}
