import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { ProxyStatus } from '../../proto/gen/loom/v1/admin.js';

/** Acks remembered per proxy for convergence queries; older ones are dropped. */
export const ACK_HISTORY_LIMIT = 64;

/**
 * Versions remembered per connected proxy as sent to it or reported in its hello; older ones are
 * dropped. A proxy builds only the newest snapshot that arrived during a build. So its ack of a
 * dropped version, which this control plane then ignores, needs more than this many sends during
 * one build. The ack of the newer version it builds next counts as usual.
 */
export const SENT_VERSION_LIMIT = 64;

/**
 * Versions kept per proxy once its stream closes, the newest ones. A proxy that reconnects acks
 * on its new stream only the snapshots that were in flight when the old one broke. A registry may
 * keep `DEFAULT_MAX_DISCONNECTED` disconnected proxies, so fewer versions each bound its memory.
 */
export const DISCONNECTED_SENT_VERSION_LIMIT = 8;

/**
 * Maximum length in characters of a nack error that the registry keeps, the limit of the nack
 * errors that a proxy's hello repeats. A proxy may send an error of any size, such as one line
 * per upstream of a snapshot, and every status call would return all of it.
 */
export const MAX_NACK_ERROR_LENGTH = 1_024;

/** Returns `text` cut to `MAX_NACK_ERROR_LENGTH` characters, ending in "..." when cut. */
export function clipText(text: string): string {
  if (text.length <= MAX_NACK_ERROR_LENGTH) return text;
  return `${text.slice(0, MAX_NACK_ERROR_LENGTH - 3)}...`;
}

/**
 * How long a proxy stays listed after its last stream closed, in milliseconds: a day, so that
 * `status` still shows a proxy that died overnight.
 */
export const DISCONNECTED_RETENTION_MS = 24 * 60 * 60 * 1000;

/**
 * Default maximum of disconnected proxies that a registry keeps. Each proxy process that exits
 * leaves a record for `DISCONNECTED_RETENTION_MS`, so a crash loop under random ids would grow
 * the list without this cap.
 */
export const DEFAULT_MAX_DISCONNECTED = 10_000;

/** Settings of a {@link ProxyRegistry}. */
export interface ProxyRegistryOptions {
  /**
   * Maximum of disconnected proxies kept; past it the one disconnected longest is dropped.
   * Default {@link DEFAULT_MAX_DISCONNECTED}.
   */
  maxDisconnected?: number;
  /** Receives one warning each time dropping starts. */
  logger?: Logger;
}

/** One ack as the control plane received it. */
export interface AckRecord {
  epoch: string;
  version: number;
  atMs: number;
}

/** State a control plane records for one proxy, without the fields filled per query. */
export type ProxyState = Omit<ProxyStatus, 'versionAckedAtMs' | 'controlPlane'>;

/** The stream a proxy id is connected through, as its hello and the TCP peer describe it. */
export interface ProxyStream {
  /** Hello.instance_id: random per proxy process; empty from older proxies. */
  instanceId: string;
  /** Traffic address the proxy reported. */
  address: string;
  /** Host of the stream's TCP peer as gRPC reports it, without the port. */
  peerHost: string;
  /** Ends the stream, when a newer stream of the same proxy process replaces it. */
  end(reason: string): void;
}

/** Outcome of {@link ProxyRegistry.connect}. */
export type ConnectOutcome =
  | { outcome: 'connected' }
  /** The same proxy process had a stream the control plane still held; the caller ends it. */
  | { outcome: 'replaced'; previous: ProxyStream }
  /**
   * Another process owns the id, and nothing was recorded. `attempt` counts the rejected
   * streams of this process since the holder connected, from 1.
   */
  | { outcome: 'rejected'; holder: ProxyStream; attempt: number };

/** What the control plane records about one proxy. */
interface ProxyRecord extends ProxyState {
  /** The one stream this id is connected through; undefined while disconnected. */
  stream: ProxyStream | undefined;
  /** Most recent acks, oldest first, at most ACK_HISTORY_LIMIT. */
  acks: AckRecord[];
  /** Rejected streams since `stream` connected, by {@link processKey}. */
  rejections: Map<string, number>;
  /** Instance id of the process that sent the last nack; empty from older proxies. */
  nackInstanceId: string;
  /**
   * Versions sent to this id on any of its streams or reported in one of its hellos, oldest
   * first, at most {@link SENT_VERSION_LIMIT}. Each epoch is the string of the snapshot or the
   * hello, shared and not copied, so the list costs a few bytes per version.
   */
  sentVersions: VersionRef[];
}

/** Maximum number of rejected processes counted per record; past it the counts start again. */
const REJECTION_KEY_LIMIT = 16;

function processKey(stream: ProxyStream): string {
  return `${stream.instanceId}\n${stream.address}\n${stream.peerHost}`;
}

/**
 * Returns true when two streams come from the same proxy process: the same instance id, or for
 * proxies that send none, the same reported address from the same peer host.
 */
export function sameProcess(a: ProxyStream, b: ProxyStream): boolean {
  if (a.instanceId !== '' && b.instanceId !== '') return a.instanceId === b.instanceId;
  return a.address === b.address && a.peerHost === b.peerHost;
}

/** A version within one epoch. */
export interface VersionRef {
  epoch: string;
  version: number;
}

/**
 * Every proxy that has connected since the control plane started, with the
 * last version it acked, the last it nacked, how many snapshots it was sent,
 * and when it acked recent versions. Read by `loomctl status` and
 * `loomctl apply --wait`. `prune` removes proxies disconnected for longer than
 * {@link DISCONNECTED_RETENTION_MS}, so proxies that come back under new ids (the pods of
 * each rollout) do not grow the list for ever.
 *
 * An id is connected through one stream at a time. A stream of another process under an id
 * that has a stream open is rejected, so two proxies started with the same `--id` never share
 * one record. A stream closes when the proxy ends it, when its TCP connection closes, or when
 * gRPC keepalive finds the peer gone.
 */
export class ProxyRegistry {
  readonly #proxies = new Map<string, ProxyRecord>();
  readonly #listeners = new Set<(id: string) => void>();
  /** Ids of the disconnected proxies, in the order they disconnected. */
  readonly #disconnected = new Set<string>();
  readonly #maxDisconnected: number;
  readonly #logger: Logger | undefined;
  /** True from the first drop until a disconnect finds the disconnected proxies within the cap. */
  #dropping = false;

  constructor(options: ProxyRegistryOptions = {}) {
    const max = options.maxDisconnected ?? DEFAULT_MAX_DISCONNECTED;
    if (!Number.isInteger(max) || max < 0) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid maxDisconnected ${max}: expected an integer of at least 0`,
      );
    }
    this.#maxDisconnected = max;
    this.#logger = options.logger;
  }

  /**
   * Calls `listener` with the proxy's id after each connect, disconnect, ack, nack, fallback
   * and prune; a snapshot sent changes only a counter and calls nothing.
   */
  onChange(listener: (id: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Ids of every known proxy. */
  ids(): string[] {
    return [...this.#proxies.keys()];
  }

  /** Returns the proxy's state and its most recent acks, oldest first; undefined for an unknown id. */
  entry(id: string): { state: ProxyState; acks: AckRecord[] } | undefined {
    const record = this.#proxies.get(id);
    if (!record) return undefined;
    return toEntry(record);
  }

  /**
   * Forgets every proxy whose stream closed more than `retentionMs` before `nowMs`, and
   * returns how many it forgot.
   */
  prune(nowMs = Date.now(), retentionMs = DISCONNECTED_RETENTION_MS): number {
    let forgotten = 0;
    for (const [id, record] of this.#proxies) {
      if (record.connected || nowMs - record.lastSeenMs <= retentionMs) continue;
      this.#proxies.delete(id);
      this.#disconnected.delete(id);
      forgotten += 1;
      this.#changed(id);
    }
    return forgotten;
  }

  #changed(id: string): void {
    for (const listener of this.#listeners) listener(id);
  }

  /**
   * Records `stream` as the stream of proxy `id`, which serves `version` of `epoch` (0 and
   * empty for none), unless another process owns the id. Then it records nothing and returns that
   * stream as the holder. A stream of the same process replaces the one held, which that
   * process no longer uses but whose close has not arrived, as after a half-open TCP connection.
   */
  connect(id: string, stream: ProxyStream, epoch: string, version: number): ConnectOutcome {
    const known = this.#proxies.get(id);
    const previous = known?.stream;
    if (known !== undefined && previous !== undefined && !sameProcess(previous, stream)) {
      const key = processKey(stream);
      const attempt = (known.rejections.get(key) ?? 0) + 1;
      if (known.rejections.size >= REJECTION_KEY_LIMIT) known.rejections.clear();
      known.rejections.set(key, attempt);
      return { outcome: 'rejected', holder: previous, attempt };
    }

    const now = Date.now();
    const record: ProxyRecord = known ?? {
      id,
      address: stream.address,
      connected: true,
      ackedEpoch: epoch,
      ackedVersion: version,
      nackedEpoch: '',
      nackedVersion: 0,
      nackError: '',
      connectedAtMs: now,
      lastSeenMs: now,
      snapshotsSent: 0,
      fallbackVersion: 0,
      fallbackEpoch: '',
      instanceId: stream.instanceId,
      stream: undefined,
      acks: [],
      rejections: new Map(),
      nackInstanceId: '',
      sentVersions: [],
    };
    record.stream = stream;
    record.rejections.clear();
    record.address = stream.address;
    record.instanceId = stream.instanceId;
    record.connected = true;
    record.connectedAtMs = now;
    record.lastSeenMs = now;
    // The hello states what the process serves now. A new process under the id serves none of
    // the versions the previous one acked, so keeping them would report its nacks as applied.
    record.ackedEpoch = epoch;
    record.ackedVersion = version;
    if (version > 0) rememberVersion(record, epoch, version);
    this.#proxies.set(id, record);
    this.#disconnected.delete(id);
    this.#changed(id);
    return previous === undefined ? { outcome: 'connected' } : { outcome: 'replaced', previous };
  }

  /** Records that `stream` of proxy `id` closed; a stream that was replaced changes nothing. */
  disconnect(id: string, stream: ProxyStream): void {
    const record = this.#proxies.get(id);
    if (!record || record.stream !== stream) return;

    record.stream = undefined;
    record.connected = false;
    record.lastSeenMs = Date.now();
    const dropped = record.sentVersions.length - DISCONNECTED_SENT_VERSION_LIMIT;
    if (dropped > 0) record.sentVersions.splice(0, dropped);
    this.#disconnected.add(id);
    this.#changed(id);
    this.#dropOverCap();
  }

  /** Forgets the proxies disconnected longest while more than the cap are disconnected. */
  #dropOverCap(): void {
    if (this.#disconnected.size <= this.#maxDisconnected) {
      this.#dropping = false;
      return;
    }
    if (!this.#dropping) {
      this.#dropping = true;
      this.#logger?.warn(
        { maxDisconnected: this.#maxDisconnected },
        'too many disconnected proxies; forgetting the ones disconnected longest',
      );
    }
    for (const id of this.#disconnected) {
      if (this.#disconnected.size <= this.#maxDisconnected) break;
      this.#disconnected.delete(id);
      this.#proxies.delete(id);
      this.#changed(id);
    }
  }

  /** Counts one snapshot written to a stream of the proxy, and remembers its version. */
  sent(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.snapshotsSent += 1;
    rememberVersion(record, epoch, version);
  }

  /**
   * Returns true when `version` of `epoch` was sent to proxy `id` on one of its streams, or
   * reported in one of its hellos, among the newest such versions (see {@link SENT_VERSION_LIMIT}
   * and {@link DISCONNECTED_SENT_VERSION_LIMIT}). Only such a version may be acked: the proxy
   * cannot have built any other from this control plane. A proxy that moved here from another
   * replica reports what it serves in its hello.
   */
  wasSent(id: string, epoch: string, version: number): boolean {
    const sent = this.#proxies.get(id)?.sentVersions ?? [];
    return sent.some((entry) => entry.version === version && entry.epoch === epoch);
  }

  ack(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    const now = Date.now();
    record.ackedEpoch = epoch;
    record.ackedVersion = version;
    record.lastSeenMs = now;
    if (record.fallbackEpoch !== epoch || record.fallbackVersion < version) {
      record.fallbackVersion = 0;
      record.fallbackEpoch = '';
    }
    record.acks.push({ epoch, version, atMs: now });
    if (record.acks.length > ACK_HISTORY_LIMIT) record.acks.shift();
    this.#changed(id);
  }

  nack(id: string, epoch: string, version: number, error: string): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.nackedEpoch = epoch;
    record.nackedVersion = version;
    record.nackError = clipText(error);
    record.nackInstanceId = record.instanceId;
    record.lastSeenMs = Date.now();
    this.#changed(id);
  }

  /** Records that the proxy was sent the accepted `version` after it nacked a newer one. */
  fallback(id: string, epoch: string, version: number): void {
    const record = this.#proxies.get(id);
    if (!record) return;

    record.fallbackEpoch = epoch;
    record.fallbackVersion = version;
    this.#changed(id);
  }

  /**
   * The last version the proxy nacked, or undefined when it never nacked one. With
   * `instanceId`, a nack that another process of the proxy sent counts as none, because a
   * restarted process may run a fixed build or host. Proxies that send no instance id cannot
   * be distinguished, so their last nack always counts.
   */
  lastNack(id: string, instanceId = ''): VersionRef | undefined {
    const record = this.#proxies.get(id);
    if (!record || record.nackedVersion === 0) return undefined;
    if (instanceId !== '' && record.nackInstanceId !== '' && record.nackInstanceId !== instanceId) {
      return undefined;
    }
    return { epoch: record.nackedEpoch, version: record.nackedVersion };
  }

  /**
   * Every known proxy, sorted by id. With `convergence`, each status carries
   * when the proxy first acked that version or a newer one of its epoch.
   */
  list(convergence?: VersionRef, controlPlane = ''): ProxyStatus[] {
    const statuses: ProxyStatus[] = [];
    for (const record of this.#proxies.values()) {
      const versionAckedAtMs = convergence ? firstAckAt(record.acks, convergence) : 0;
      statuses.push(Object.assign(stateOf(record), { versionAckedAtMs, controlPlane }));
    }
    return statuses.sort(byId);
  }
}

/** Adds a version to the record's sent versions as the newest; past the limit the oldest goes. */
function rememberVersion(record: ProxyRecord, epoch: string, version: number): void {
  const sent = record.sentVersions;
  const index = sent.findIndex((entry) => entry.version === version && entry.epoch === epoch);
  if (index !== -1) sent.splice(index, 1);
  sent.push({ epoch, version });
  if (sent.length > SENT_VERSION_LIMIT) sent.shift();
}

function toEntry(record: ProxyRecord): { state: ProxyState; acks: AckRecord[] } {
  return { state: stateOf(record), acks: [...record.acks] };
}

/**
 * Copies the fields of `ProxyState` out of a record, as `status` does for every record on each
 * call. A rest pattern that leaves out the other fields took about 5 µs per record on Node.js
 * 20.20 (V8 11.3), 20 times as long, and so did a spread of this copy into a larger literal.
 */
function stateOf(record: ProxyRecord): ProxyState {
  return {
    id: record.id,
    address: record.address,
    connected: record.connected,
    ackedEpoch: record.ackedEpoch,
    ackedVersion: record.ackedVersion,
    nackedVersion: record.nackedVersion,
    nackError: record.nackError,
    connectedAtMs: record.connectedAtMs,
    lastSeenMs: record.lastSeenMs,
    nackedEpoch: record.nackedEpoch,
    snapshotsSent: record.snapshotsSent,
    fallbackVersion: record.fallbackVersion,
    fallbackEpoch: record.fallbackEpoch,
    instanceId: record.instanceId,
  };
}

/** Orders proxy statuses by id. */
export function byId(a: { id: string }, b: { id: string }): number {
  if (a.id < b.id) return -1;
  if (a.id > b.id) return 1;
  return 0;
}

/** When the first of `acks` at or past `target` in its epoch arrived; 0 when none did. */
export function firstAckAt(acks: AckRecord[], target: VersionRef): number {
  for (const ack of acks) {
    if (ack.epoch === target.epoch && ack.version >= target.version) return ack.atMs;
  }
  return 0;
}
