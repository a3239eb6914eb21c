import { createHash } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

import type { Logger } from '../../common/logger.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

/** Format marker of the file; a file with another marker is ignored. */
const FORMAT = 'loom-snapshot/1';

/** Default age past which a cached snapshot is not served: 24 hours. */
export const DEFAULT_SNAPSHOT_CACHE_MAX_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Default wait before a write, in milliseconds. A write per one-route change cost a proxy about
 * 1 ms of CPU time at 1,000 routes, 0.45 ms of it on the main thread (hash, base64, JSON), plus
 * two fsyncs (`bench/propagation/proxy-grpc-cpu.ts --snapshot-cache`, 2-core Xeon). The wait
 * moves the write past the time in which a fleet applies a change, and writes a burst once.
 */
export const DEFAULT_SNAPSHOT_CACHE_WRITE_DELAY_MS = 1_000;

/** Settings of a snapshot file. */
export interface SnapshotFileOptions {
  /** Wait from a save to the start of its write, in milliseconds; default {@link DEFAULT_SNAPSHOT_CACHE_WRITE_DELAY_MS}. */
  writeDelayMs?: number;
}

/** Contents of the file: the encoded snapshot and what checks it. */
interface Envelope {
  format: string;
  savedAtMs: number;
  epoch: string;
  version: number;
  /** Hex SHA-256 of the encoded snapshot bytes. */
  sha256: string;
  /** The snapshot as protobuf bytes, in base64. */
  snapshot: string;
}

/** A snapshot read back from the file, with the time it was saved. */
export interface CachedSnapshot {
  snapshot: Snapshot;
  savedAtMs: number;
}

/**
 * The last-known-good snapshot of a proxy on local disk. Each write writes a
 * temporary file, syncs it, renames it over the old one and syncs the folder,
 * so a crash leaves either the old file or the new one, never a torn one. A
 * checksum over the snapshot bytes catches corruption on read. A write starts
 * `writeDelayMs` after a save and takes the newest snapshot saved by then, so
 * a burst of saves is written once. A crash can thus leave a snapshot up to
 * about `writeDelayMs` older than the last one saved. `flush` writes the
 * waiting snapshot at once.
 */
export class SnapshotFile {
  readonly path: string;
  readonly #logger: Logger;
  readonly #writeDelayMs: number;
  #pending: { snapshot: Snapshot; encoded: Buffer | undefined } | undefined;
  #saving: Promise<void> | undefined;
  /** The timer of the wait before the next write, and the function that ends the wait. */
  #wait: { timer: NodeJS.Timeout; end: () => void } | undefined;
  /** True from a `flush` until the waiting snapshot is written, so no write waits meanwhile. */
  #flushing = false;

  constructor(path: string, logger: Logger, options: SnapshotFileOptions = {}) {
    this.path = path;
    this.#logger = logger.child({ component: 'snapshot-file' });
    this.#writeDelayMs = options.writeDelayMs ?? DEFAULT_SNAPSHOT_CACHE_WRITE_DELAY_MS;
  }

  /**
   * Queues `snapshot` to be written; resolves when it (or a newer one) is on disk. `encoded` is
   * optional: `snapshot` as protobuf bytes, such as the bytes it was decoded from. It is copied
   * before `save` returns and spares encoding the snapshot again.
   */
  save(snapshot: Snapshot, encoded?: Uint8Array): Promise<void> {
    this.#pending = { snapshot, encoded: encoded === undefined ? undefined : Buffer.from(encoded) };
    this.#saving ??= this.#drain().finally(() => {
      this.#saving = undefined;
      this.#flushing = false;
    });
    return this.#saving;
  }

  /** Writes the pending snapshot without waiting for the delay; resolves when it is on disk. */
  flush(): Promise<void> {
    if (this.#saving === undefined) return Promise.resolve();
    this.#flushing = true;
    if (this.#wait !== undefined) {
      clearTimeout(this.#wait.timer);
      this.#wait.end();
    }
    return this.#saving;
  }

  /**
   * Reads the file. Returns undefined, and logs why, when it is missing,
   * unreadable, corrupt, or older than `maxAgeMs`; never throws.
   */
  async load(maxAgeMs: number, now = Date.now()): Promise<CachedSnapshot | undefined> {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(await readFile(this.path, 'utf8')) as Envelope;
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      if (!missing) this.#logger.warn({ path: this.path, err: error }, 'snapshot cache unreadable');
      return undefined;
    }

    const bytes = Buffer.from(String(envelope.snapshot ?? ''), 'base64');
    if (envelope.format !== FORMAT || digest(bytes) !== envelope.sha256) {
      this.#logger.warn({ path: this.path, format: envelope.format }, 'snapshot cache corrupt');
      return undefined;
    }
    const ageMs = now - envelope.savedAtMs;
    if (!(ageMs <= maxAgeMs)) {
      this.#logger.warn({ path: this.path, ageMs, maxAgeMs }, 'snapshot cache too old');
      return undefined;
    }
    try {
      return { snapshot: Snapshot.decode(bytes), savedAtMs: envelope.savedAtMs };
    } catch (error) {
      this.#logger.warn({ path: this.path, err: error }, 'snapshot cache corrupt');
      return undefined;
    }
  }

  async #drain(): Promise<void> {
    while (this.#pending !== undefined) {
      if (!this.#flushing && this.#writeDelayMs > 0) await this.#delay();
      const { snapshot, encoded } = this.#pending;
      this.#pending = undefined;
      try {
        await this.#write(snapshot, encoded);
      } catch (error) {
        // The proxy keeps serving; only a restart without a control plane needs the file.
        this.#logger.warn({ path: this.path, err: error }, 'snapshot cache write failed');
      }
    }
  }

  /** Waits `writeDelayMs`, or until `flush` ends the wait. */
  #delay(): Promise<void> {
    return new Promise((resolve) => {
      const end = () => {
        this.#wait = undefined;
        resolve();
      };
      this.#wait = { timer: setTimeout(end, this.#writeDelayMs), end };
    });
  }

  async #write(snapshot: Snapshot, encoded: Buffer | undefined): Promise<void> {
    const bytes = encoded ?? Buffer.from(Snapshot.encode(snapshot).finish());
    const envelope: Envelope = {
      format: FORMAT,
      savedAtMs: Date.now(),
      epoch: snapshot.epoch,
      version: snapshot.version,
      sha256: digest(bytes),
      snapshot: bytes.toString('base64'),
    };
    const temporary = `${this.path}.${process.pid}.tmp`;
    const file = await open(temporary, 'w', 0o600);
    try {
      await file.writeFile(JSON.stringify(envelope));
      await file.sync();
    } finally {
      await file.close();
    }
    try {
      await rename(temporary, this.path);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    await syncDirectory(dirname(this.path));
    this.#logger.debug(
      { path: this.path, epoch: snapshot.epoch, version: snapshot.version },
      'snapshot cache written',
    );
  }
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function digest(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
