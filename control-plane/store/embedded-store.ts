import { createHash, randomUUID } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { pino } from 'pino';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { movesAcceptedForward } from './accepted-record.js';
import { createDataDir, describeFileError, isFileError } from './data-dir.js';
import { DataDirLock } from './data-dir-lock.js';
import {
  AcceptedFileSchema,
  encodeRecord,
  IdentitySchema,
  LogWriteError,
  readRecordFile,
  recovery,
  StateSchema,
  TransactionLog,
  writeFileAtomic,
  type LogEntry,
  type State,
} from './embedded-files.js';
import { WatchHub } from './embedded-watch.js';
import {
  directoryPrefixes,
  validateCommit,
  validateWatchStart,
  type CheckedCommit,
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
  WatchBatch,
  WatchEvent,
  WatchHandlers,
} from './store.js';

/** Options of {@link EmbeddedStore.open}. */
export interface EmbeddedStoreOptions {
  /** Directory of the store's files; created when missing. */
  dataDir: string;
  logger?: Logger;
  /** Log entries after which the log is folded into the state file. Defaults to 1000. */
  compactAfter?: number;
  /**
   * Log size in bytes after which the log is folded into the state file, whatever its number
   * of entries. Defaults to 64 MiB.
   */
  compactAfterBytes?: number;
  /** Recent batches kept for watches that start in the past. Defaults to 1000. */
  historyLimit?: number;
  /**
   * Size of the recent batches kept, counted as the characters of their keys and values, above
   * which the oldest are dropped. The newest batch is always kept. Defaults to 64 MiB.
   */
  historyBytes?: number;
}

/**
 * Default of both byte limits. A log of many large applies would otherwise be read whole on
 * open. By estimate, a 100,000-route apply writes 30 to 40 MB (routes of 300 to 400 bytes of
 * JSON), so the history still keeps one such apply.
 */
const DEFAULT_LIMIT_BYTES = 64 * 1024 * 1024;

const IDENTITY_FILE = 'identity.json';
const STATE_FILE = 'state.json';
const LOG_FILE = 'log.jsonl';
const ACCEPTED_FILE = 'accepted.json';

interface StoredValue {
  value: string;
  modRevision: number;
}

/** The accepted version with the snapshot content it was recorded with. */
interface StoredAccepted {
  version: AcceptedVersion;
  content: Buffer;
}

/**
 * A {@link Store} in a local data directory, for a single control plane
 * without etcd. It follows etcd's model: one revision counter that starts at 1
 * and grows by one per commit, also across restarts.
 *
 * Files in the data directory:
 * - `LOCK`: pid and, on Linux, start time of the process that has the store open; a
 *   second open fails.
 * - `identity.json`: the epoch, a random UUID chosen when the directory is created.
 * - `log.jsonl`: one checksummed line per committed transaction. A commit
 *   resolves only after its line is synced to disk.
 * - `state.json`: every key at one revision. After `compactAfter` log entries,
 *   or `compactAfterBytes` of them, the store writes it atomically and empties the log.
 * - `accepted.json`: the accepted version and its snapshot's encoded routes and
 *   upstreams, replaced atomically by `recordAccepted`. The store keeps no
 *   history to rebuild a past snapshot from, so it keeps that one whole.
 *
 * Opening loads the state file and replays the log after it. Watches can start
 * from any of the last `historyLimit` revisions, including those replayed on
 * open, as long as those revisions' keys and values stay within `historyBytes`.
 * A watch from an older revision fails with a retryable `LOOM_STORE_UNAVAILABLE`,
 * as on a compacted etcd.
 */
export class EmbeddedStore implements Store {
  readonly #dataDir: string;
  #epoch: string;
  readonly #lock: DataDirLock;
  readonly #log: TransactionLog;
  readonly #hub: WatchHub;
  readonly #logger: Logger;
  readonly #compactAfter: number;
  readonly #compactAfterBytes: number;
  readonly #keys: Map<string, StoredValue>;
  /** Revision of the last commit that wrote a key under each `/`-terminated prefix. */
  readonly #directories: Map<string, number>;
  #revision: number;
  #accepted: StoredAccepted | undefined;
  /** Tail of the commit queue; commits run one at a time in call order. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Tail of the queue of accepted-version writes, apart from commits so neither waits. */
  #acceptedQueue: Promise<unknown> = Promise.resolve();
  /** Set when a log write failed so that the file may no longer match memory. */
  #writeFailure: LogWriteError | undefined;
  #closed = false;
  #commitsInFlight = 0;

  private constructor(parts: {
    dataDir: string;
    epoch: string;
    lock: DataDirLock;
    log: TransactionLog;
    state: State;
    accepted: StoredAccepted | undefined;
    logger: Logger;
    compactAfter: number;
    compactAfterBytes: number;
    historyLimit: number;
    historyBytes: number;
  }) {
    this.#accepted = parts.accepted;
    this.#dataDir = parts.dataDir;
    this.#epoch = parts.epoch;
    this.#lock = parts.lock;
    this.#log = parts.log;
    this.#logger = parts.logger;
    this.#compactAfter = parts.compactAfter;
    this.#compactAfterBytes = parts.compactAfterBytes;
    this.#revision = parts.state.revision;
    this.#keys = new Map(
      parts.state.keys.map(([key, value, modRevision]) => [key, { value, modRevision }]),
    );
    this.#directories = new Map(parts.state.directories);
    this.#hub = new WatchHub(
      { batches: parts.historyLimit, bytes: parts.historyBytes },
      this.#revision,
      this.#dataDir,
    );
  }

  /**
   * Opens the store in `options.dataDir`, creating the directory and its epoch
   * when missing, and replays its log.
   *
   * @throws LoomError `LOOM_STORE_UNAVAILABLE` when another running process has
   *   the directory open.
   * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the path when the directory
   *   cannot be created, such as when a file exists at that path.
   * @throws LoomError `LOOM_STORE_CORRUPT` naming the file, and the line for the
   *   log, when a file is damaged anywhere but in the log's last line.
   */
  static async open(options: EmbeddedStoreOptions): Promise<EmbeddedStore> {
    const compactAfter = options.compactAfter ?? 1000;
    const compactAfterBytes = options.compactAfterBytes ?? DEFAULT_LIMIT_BYTES;
    const historyLimit = options.historyLimit ?? 1000;
    const historyBytes = options.historyBytes ?? DEFAULT_LIMIT_BYTES;
    const limits = { compactAfter, compactAfterBytes, historyLimit, historyBytes };
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new LoomError(
          'LOOM_INVALID_ARGUMENT',
          `${name} must be a positive integer (got ${value})`,
        );
      }
    }
    const dataDir = resolve(options.dataDir);
    const logger = (options.logger ?? pino({ enabled: false })).child({
      component: 'embedded-store',
      dataDir,
    });
    await createDataDir(dataDir);
    let lock: DataDirLock;
    try {
      lock = await DataDirLock.acquire(dataDir, logger);
    } catch (error) {
      throw describeOpenError(error, dataDir);
    }

    try {
      const epoch = await loadOrCreateEpoch(dataDir, logger);
      const state = (await readRecordFile(join(dataDir, STATE_FILE), StateSchema)) ?? emptyState();
      const accepted = await loadAccepted(join(dataDir, ACCEPTED_FILE), logger);
      const { log, entries } = await TransactionLog.open(
        join(dataDir, LOG_FILE),
        state.revision,
        logger,
      );

      const store = new EmbeddedStore({
        dataDir,
        epoch,
        lock,
        log,
        state,
        accepted,
        logger,
        ...limits,
      });
      store.#replay(entries);
      logger.info(
        { revision: store.#revision, epoch, replayed: entries.length },
        'embedded store opened',
      );
      return store;
    } catch (error) {
      await lock.release().catch(() => undefined);
      throw describeOpenError(error, dataDir);
    }
  }

  async epoch(): Promise<string> {
    this.#assertOpen();
    return this.#epoch;
  }

  async renewEpoch(stale: string): Promise<string> {
    this.#assertOpen();
    if (stale !== this.#epoch) return this.#epoch;

    const epoch = randomUUID();
    await writeFileAtomic(join(this.#dataDir, IDENTITY_FILE), encodeRecord({ format: 1, epoch }));
    this.#epoch = epoch;
    this.#logger.warn({ stale, epoch }, 'embedded store epoch renewed');
    return epoch;
  }

  async range(prefix: string): Promise<RangeResult> {
    this.#assertOpen();

    const items: KeyValue[] = [];
    for (const [key, stored] of this.#keys) {
      if (key.startsWith(prefix)) {
        items.push({ key, value: stored.value, modRevision: stored.modRevision });
      }
    }
    // etcd orders keys by their bytes; UTF-16 order differs for characters above U+FFFF.
    items.sort((left, right) => Buffer.compare(Buffer.from(left.key), Buffer.from(right.key)));
    return { revision: this.#revision, items };
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    this.#assertOpen();
    validateWatchStart(fromRevision);

    return this.#hub.watch(prefix, fromRevision, handlers);
  }

  get commitsInFlight(): number {
    return this.#commitsInFlight;
  }

  /** Always undefined: a commit to the local data directory has no deadline. */
  get commitDeadline(): undefined {
    return undefined;
  }

  async commit(operations: StoreOperation[], options?: CommitOptions): Promise<number> {
    this.#assertOpen();
    const checked = validateCommit(operations, options, '');
    const copied = operations.map(copyOperation);

    this.#commitsInFlight++;
    try {
      return await this.#serialize(() => this.#commitNow(copied, checked));
    } finally {
      this.#commitsInFlight--;
    }
  }

  async acceptedVersion(): Promise<AcceptedVersion | undefined> {
    this.#assertOpen();
    return this.#accepted?.version;
  }

  /**
   * Replaces `accepted.json` atomically when `accepted` moves the record forward. Writes
   * run one at a time, so the file never moves back.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when the SHA-256 of `content` is not
   *   `accepted.hash`.
   */
  async recordAccepted(accepted: AcceptedVersion, content: Uint8Array): Promise<boolean> {
    this.#assertOpen();
    const contentHash = createHash('sha256').update(content).digest('hex');
    if (contentHash !== accepted.hash) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `content of accepted version ${accepted.version} hashes to ${contentHash}, ` +
          `not ${accepted.hash}`,
      );
    }
    const copy = Buffer.from(content);

    const write = async (): Promise<boolean> => {
      if (accepted.epoch !== this.#epoch) return false;
      if (!movesAcceptedForward(this.#accepted?.version, accepted)) return false;

      const { epoch, version, hash } = accepted;
      const file = { format: 1, epoch, version, hash, content: copy.toString('base64') };
      await writeFileAtomic(join(this.#dataDir, ACCEPTED_FILE), encodeRecord(file));
      this.#accepted = { version: { epoch, version, hash }, content: copy };
      return true;
    };
    const result = this.#acceptedQueue.then(write);
    this.#acceptedQueue = result.catch(() => undefined);
    return result;
  }

  /** Returns the recorded content when `accepted` is the version recorded last. */
  async readAcceptedContent(_prefix: string, accepted: AcceptedVersion): Promise<AcceptedContent> {
    this.#assertOpen();
    const stored = this.#accepted;
    if (
      stored === undefined ||
      stored.version.epoch !== accepted.epoch ||
      stored.version.version !== accepted.version ||
      stored.version.hash !== accepted.hash
    ) {
      return { kind: 'missing' };
    }
    return { kind: 'recorded', bytes: stored.content };
  }

  /** Waits for queued commits, stops every watch, closes the log and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }

    this.#closed = true;
    await this.#queue;
    await this.#acceptedQueue;
    this.#hub.close();
    await this.#log.close();
    await this.#lock.release();
    this.#logger.info({ revision: this.#revision }, 'embedded store closed');
  }

  async #commitNow(operations: StoreOperation[], checked: CheckedCommit): Promise<number> {
    if (this.#writeFailure !== undefined) {
      throw new LoomError(
        'LOOM_STORE_UNAVAILABLE',
        `a write to ${this.#log.path} failed earlier and may have left the file out of step ` +
          `with memory (${describeFileError(this.#writeFailure.cause, this.#log.path)}); ` +
          'fix the cause and restart the control plane, which reads the file again',
        { cause: this.#writeFailure },
      );
    }
    this.#checkRevision(checked);

    const entry: LogEntry = { revision: this.#revision + 1, operations };
    try {
      await this.#log.append(entry);
    } catch (error) {
      const failure = error as LogWriteError;
      if (failure.uncertain) this.#writeFailure = failure;
      this.#logger.error(
        { err: failure.cause, revision: entry.revision, uncertain: failure.uncertain },
        'log write failed',
      );
      const next = failure.uncertain
        ? 'fix the cause and restart the control plane, which reads the file again'
        : 'nothing was written; fix the cause and apply again';
      throw new LoomError(
        'LOOM_STORE_UNAVAILABLE',
        `writing revision ${entry.revision} failed: ` +
          `${describeFileError(failure.cause, this.#log.path)}; ${next}`,
        { cause: failure.cause },
      );
    }

    this.#apply(entry);
    if (this.#logIsFull()) {
      void this.#serialize(() => this.#compact());
    }
    return entry.revision;
  }

  #checkRevision({ ifRevision, checkPrefix }: CheckedCommit): void {
    if (ifRevision === undefined) {
      return;
    }

    const lastWrite =
      checkPrefix === undefined ? this.#revision : (this.#directories.get(checkPrefix) ?? 0);
    if (lastWrite > ifRevision) {
      const scope = checkPrefix === undefined ? 'keys' : `keys under "${checkPrefix}"`;
      throw new LoomError(
        'LOOM_VERSION_CONFLICT',
        `${scope} were modified at revision ${lastWrite}, after the expected revision ` +
          `${ifRevision}; read them again and retry`,
      );
    }
  }

  /** Applies a logged entry to memory and publishes its batch. */
  #apply(entry: LogEntry): void {
    const events: WatchEvent[] = [];
    for (const operation of entry.operations) {
      for (const directory of directoryPrefixes(operation.key, '')) {
        this.#directories.set(directory, entry.revision);
      }
      const event = this.#applyOperation(operation, entry.revision);
      if (event !== undefined) {
        events.push(Object.freeze(event));
      }
    }

    this.#revision = entry.revision;
    const batch: WatchBatch = Object.freeze({ revision: entry.revision, events });
    this.#hub.publish(batch);
  }

  /** Returns the event of one operation; deleting a missing key has none, as in etcd. */
  #applyOperation(operation: StoreOperation, revision: number): WatchEvent | undefined {
    if (operation.type === 'put') {
      this.#keys.set(operation.key, { value: operation.value, modRevision: revision });
      return { type: 'put', key: operation.key, value: operation.value, modRevision: revision };
    }
    if (!this.#keys.delete(operation.key)) {
      return undefined;
    }
    return { type: 'delete', key: operation.key, value: '', modRevision: revision };
  }

  #replay(entries: LogEntry[]): void {
    for (const entry of entries) {
      this.#apply(entry);
    }
  }

  #logIsFull(): boolean {
    return this.#log.entries >= this.#compactAfter || this.#log.size >= this.#compactAfterBytes;
  }

  /** Writes the state file at the current revision and empties the log. */
  async #compact(): Promise<void> {
    // Commits queued behind the one that scheduled this may have scheduled more.
    if (this.#closed || this.#writeFailure !== undefined || !this.#logIsFull()) {
      return;
    }

    const state: State = {
      format: 1,
      revision: this.#revision,
      keys: [...this.#keys].map(([key, stored]) => [key, stored.value, stored.modRevision]),
      directories: [...this.#directories],
    };
    try {
      await writeFileAtomic(join(this.#dataDir, STATE_FILE), encodeRecord(state));
      // A crash here leaves log entries the state file already contains; opening skips them.
      await this.#log.reset();
      this.#logger.info({ revision: this.#revision, keys: state.keys.length }, 'log compacted');
    } catch (error) {
      // The log still contains every entry, so commits go on and the next one retries.
      this.#logger.warn({ err: error, revision: this.#revision }, 'log compaction failed');
    }
  }

  #serialize<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(task);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new LoomError('LOOM_STORE_UNAVAILABLE', `embedded store in ${this.#dataDir} is closed`);
    }
  }
}

/** Rewords a file system error met while opening the store to name the path and the fix. */
function describeOpenError(error: unknown, dataDir: string): unknown {
  if (!isFileError(error)) return error;
  return new LoomError(
    'LOOM_STORE_UNAVAILABLE',
    `cannot open the embedded store in ${dataDir}: ${describeFileError(error, dataDir)}`,
    { cause: error },
  );
}

/**
 * Returns the epoch of the data directory, creating the directory's files when it is new. A new
 * directory gets its empty log before its identity file, so a log that is missing next to an
 * identity file was lost, and opening the rest would drop every commit it contained.
 */
async function loadOrCreateEpoch(dataDir: string, logger: Logger): Promise<string> {
  const path = join(dataDir, IDENTITY_FILE);
  const logPath = join(dataDir, LOG_FILE);
  const identity = await readRecordFile(path, IdentitySchema);
  if (identity !== undefined) {
    if (!(await exists(logPath))) {
      throw new LoomError(
        'LOOM_STORE_CORRUPT',
        `${logPath} is missing but ${path} exists, so the commits in the log are lost; ` +
          `restore the file, or ${recovery(logPath)}`,
      );
    }
    return identity.epoch;
  }

  const existing = await Promise.all(
    [STATE_FILE, LOG_FILE].map((name) => hasContent(join(dataDir, name))),
  );
  if (existing.some(Boolean)) {
    throw new LoomError(
      'LOOM_STORE_CORRUPT',
      `${path} is missing but ${dataDir} contains store data; ` +
        'restore the file or start from an empty directory',
    );
  }
  const epoch = randomUUID();
  await writeFile(logPath, '', { flag: 'a' });
  // Syncing the directory after the rename makes the log's entry durable too.
  await writeFileAtomic(path, encodeRecord({ format: 1, epoch }));
  logger.info({ epoch }, 'data directory created');
  return epoch;
}

/**
 * Advice for a damaged `accepted.json`. The file only lets a restarted control plane send the
 * last accepted version as a fallback, so the store opens without it.
 */
const ACCEPTED_FILE_IGNORED =
  'the control plane ignores it and replaces it when it records the next accepted version, ' +
  'so nothing needs to be done; until then it has no accepted version to send to a proxy ' +
  'that rejects a newer one';

/**
 * Reads the accepted snapshot file. A damaged file, or content that does not match its hash,
 * is skipped with a warning: it only serves fallbacks, and the next recorded ack replaces it.
 */
async function loadAccepted(path: string, logger: Logger): Promise<StoredAccepted | undefined> {
  let file;
  try {
    file = await readRecordFile(path, AcceptedFileSchema, ACCEPTED_FILE_IGNORED);
  } catch (error) {
    if (!(error instanceof LoomError) || error.code !== 'LOOM_STORE_CORRUPT') throw error;
    logger.warn({ file: path, err: error }, 'accepted snapshot file skipped');
    return undefined;
  }
  if (file === undefined) return undefined;

  const content = Buffer.from(file.content, 'base64');
  const hash = createHash('sha256').update(content).digest('hex');
  if (hash !== file.hash) {
    logger.warn({ file: path, hash, expected: file.hash }, 'accepted snapshot file skipped');
    return undefined;
  }
  return { version: { epoch: file.epoch, version: file.version, hash: file.hash }, content };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

async function hasContent(path: string): Promise<boolean> {
  try {
    return (await stat(path)).size > 0;
  } catch {
    return false;
  }
}

function emptyState(): State {
  return { format: 1, revision: 0, keys: [], directories: [] };
}

function copyOperation(operation: StoreOperation): StoreOperation {
  if (operation.type === 'put') {
    return { type: 'put', key: operation.key, value: operation.value };
  }
  return { type: 'delete', key: operation.key };
}
