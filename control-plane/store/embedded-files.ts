import { createHash } from 'node:crypto';
import { open, readFile, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

import { z } from 'zod';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { AcceptedVersionSchema } from './accepted-record.js';

/*
 * Every file of the embedded store contains records of one line each:
 * `<sha256 of the JSON, hex> <JSON>\n`. The checksum covers the exact bytes of
 * the JSON, so a torn or damaged line never parses as a valid record.
 */

const OperationSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('put'), key: z.string(), value: z.string() }),
  z.object({ type: z.literal('delete'), key: z.string() }),
]);

const revision = z.number().int().nonnegative();

/** One committed transaction in the log. */
export const LogEntrySchema = z.object({
  revision: revision.min(1),
  operations: z.array(OperationSchema).min(1),
});
export type LogEntry = z.infer<typeof LogEntrySchema>;

/** The whole key space at one revision, written when the log is compacted. */
export const StateSchema = z.object({
  format: z.literal(1),
  revision,
  /** `[key, value, modRevision]` of every live key. */
  keys: z.array(z.tuple([z.string(), z.string(), revision])),
  /** `[prefix, revision]`: the last commit that wrote a key under each `/`-terminated prefix. */
  directories: z.array(z.tuple([z.string(), revision])),
});
export type State = z.infer<typeof StateSchema>;

/**
 * The newest snapshot a proxy acked: its epoch, version and content hash, and its encoded
 * routes and upstreams in base64. The store has no history to rebuild it from, so it keeps
 * the content itself.
 */
export const AcceptedFileSchema = AcceptedVersionSchema.extend({
  format: z.literal(1),
  content: z.base64(),
});
export type AcceptedFile = z.infer<typeof AcceptedFileSchema>;

/** Identity of a data directory, written once when it is created. */
/** The data directory's epoch; a blank one could not tell two histories apart. */
export const IdentitySchema = z.object({
  format: z.literal(1),
  epoch: z.string().regex(/\S/, 'the epoch is blank'),
});
export type Identity = z.infer<typeof IdentitySchema>;

/** Encodes `value` as one checksummed line, newline included. */
export function encodeRecord(value: unknown): string {
  const json = JSON.stringify(value);
  return `${sha256(json)} ${json}\n`;
}

/**
 * Decodes one line without its newline. Returns undefined when the checksum
 * does not match or the JSON does not fit `schema`.
 */
export function decodeRecord<T>(line: string, schema: z.ZodType<T>): T | undefined {
  const space = line.indexOf(' ');
  if (space === -1) {
    return undefined;
  }
  const json = line.slice(space + 1);
  if (sha256(json) !== line.slice(0, space)) {
    return undefined;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(json));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads a file that contains exactly one record. Returns undefined when the file
 * does not exist. `fix` is the advice that the error ends with. It defaults to
 * rebuilding the data directory, so a file the store can open without passes its own.
 *
 * @throws LoomError `LOOM_STORE_CORRUPT` naming the file when the record is damaged.
 */
export async function readRecordFile<T>(
  path: string,
  schema: z.ZodType<T>,
  fix: string = recovery(path),
): Promise<T | undefined> {
  const content = await readOptionalFile(path);
  if (content === undefined) {
    return undefined;
  }

  const record = content.endsWith('\n') ? decodeRecord(content.slice(0, -1), schema) : undefined;
  if (record === undefined) {
    throw new LoomError(
      'LOOM_STORE_CORRUPT',
      `${path} is corrupt: checksum or format mismatch; ${fix}`,
    );
  }
  return record;
}

/**
 * Replaces `path` with `content` so that a crash leaves either the old or the
 * new file: writes a temporary file, syncs it, renames it over `path`, and
 * syncs the directory so that the rename itself is durable.
 */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const temporary = `${path}.tmp`;
  const handle = await open(temporary, 'w');
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
  await syncDirectory(dirname(path));
}

/** Syncs a directory so that entries created, renamed or removed in it are durable. */
export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The append-only log of committed transactions. Each append is synced before
 * it resolves. Entries are numbered by revision without gaps.
 */
export class TransactionLog {
  readonly path: string;
  readonly #handle: FileHandle;
  /** Length of the file up to the end of its last complete record, in bytes. */
  #size: number;
  #entries: number;

  private constructor(path: string, handle: FileHandle, size: number, entries: number) {
    this.path = path;
    this.#handle = handle;
    this.#size = size;
    this.#entries = entries;
  }

  /**
   * Opens the log at `path`, creating it when missing, and returns it with the
   * entries after `afterRevision`. Entries at or below `afterRevision` are
   * already in the state file: they remain when the store stopped between
   * writing the state and truncating the log.
   *
   * A last line without its newline, or with NUL bytes where a crash left
   * blocks unwritten, is taken for a write that never completed. Such a write
   * was never acknowledged, so the line is dropped with a warning and cut from
   * the file. A complete last line that fails its checksum is damage to an
   * acknowledged commit: dropping it would hand its revision to a different
   * commit while proxies still serve the old one.
   *
   * @throws LoomError `LOOM_STORE_CORRUPT` naming the file and line when a damaged
   *   line is complete or followed by others, or when revisions skip.
   */
  static async open(
    path: string,
    afterRevision: number,
    logger: Logger,
  ): Promise<{ log: TransactionLog; entries: LogEntry[] }> {
    const content = (await readOptionalFile(path)) ?? '';
    const { entries, lineCount, validBytes, tornLine } = parseLog(path, content, afterRevision);

    const handle = await open(path, 'a');
    try {
      if (tornLine !== undefined) {
        logger.warn({ file: path, line: tornLine }, 'torn log line dropped');
        await handle.truncate(validBytes);
        await handle.sync();
      }
      if (content === '') {
        await syncDirectory(dirname(path));
      }
    } catch (error) {
      await handle.close();
      throw error;
    }
    return { log: new TransactionLog(path, handle, validBytes, lineCount), entries };
  }

  /** Size of the file up to the end of its last complete record, in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Number of entries in the file, including any already in the state file. */
  get entries(): number {
    return this.#entries;
  }

  /**
   * Appends one entry and syncs it. When the write fails, the file is cut back
   * to its last complete record.
   *
   * @throws LogWriteError with the file system's error. Its `uncertain` is true
   *   when the sync failed or the file could not be cut back, because the file's
   *   content may then differ from the store's memory.
   */
  async append(entry: LogEntry): Promise<void> {
    const line = Buffer.from(encodeRecord(entry));
    try {
      await this.#handle.appendFile(line);
    } catch (error) {
      const cut = await this.#handle.truncate(this.#size).then(
        () => true,
        () => false,
      );
      throw new LogWriteError(error, !cut);
    }
    try {
      await this.#handle.datasync();
    } catch (error) {
      // After a failed fsync, Linux may mark the unwritten pages clean, so a retry can succeed.
      throw new LogWriteError(error, true);
    }
    this.#size += line.length;
    this.#entries += 1;
  }

  /** Empties the log once its entries are in the state file. */
  async reset(): Promise<void> {
    await this.#handle.truncate(0);
    await this.#handle.sync();
    this.#size = 0;
    this.#entries = 0;
  }

  async close(): Promise<void> {
    await this.#handle.close();
  }
}

/** A failed append to the transaction log, with the file system's error as its cause. */
export class LogWriteError extends Error {
  /** Whether the file may now differ from the store's memory, so no further append is safe. */
  readonly uncertain: boolean;

  constructor(cause: unknown, uncertain: boolean) {
    super((cause as Error).message, { cause });
    this.name = 'LogWriteError';
    this.uncertain = uncertain;
  }
}

function parseLog(
  path: string,
  content: string,
  afterRevision: number,
): { entries: LogEntry[]; lineCount: number; validBytes: number; tornLine?: number } {
  const lines = content.split('\n');
  const entries: LogEntry[] = [];
  let lineCount = 0;
  let validBytes = 0;
  let previous: number | undefined;

  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    const complete = index < lines.length - 1;
    if (!complete && line === '') {
      break;
    }

    const entry = complete ? decodeRecord(line, LogEntrySchema) : undefined;
    if (entry === undefined) {
      const last = lines.slice(index + 1).every((rest) => rest === '');
      if (last && (!complete || line.includes('\0'))) {
        return { entries, lineCount, validBytes, tornLine: index + 1 };
      }
      throw corrupt(path, index + 1, 'checksum or format mismatch');
    }
    if (previous !== undefined && entry.revision !== previous + 1) {
      throw corrupt(path, index + 1, `revision ${entry.revision} follows ${previous}`);
    }

    if (
      entry.revision > afterRevision &&
      entries.length === 0 &&
      entry.revision !== afterRevision + 1
    ) {
      throw corrupt(
        path,
        index + 1,
        `revision ${entry.revision} follows the state file's ${afterRevision}`,
      );
    }

    previous = entry.revision;
    lineCount += 1;
    validBytes += Buffer.byteLength(line) + 1;
    if (entry.revision > afterRevision) {
      entries.push(entry);
    }
  }
  return { entries, lineCount, validBytes };
}

function corrupt(path: string, line: number, detail: string): LoomError {
  return new LoomError(
    'LOOM_STORE_CORRUPT',
    `${path} line ${line} is corrupt: ${detail}; ${recovery(path)}`,
  );
}

/**
 * Returns how to recover from a damaged file of the data directory. A new directory starts a new
 * epoch, which proxies accept, so applying the configuration files again restores service. Cutting
 * the log short instead would reuse versions the proxies already hold.
 */
export function recovery(path: string): string {
  const dataDir = dirname(path);
  return (
    `move ${dataDir} aside, start the control plane again and apply the configuration files ` +
    `again with "loomctl apply --prune -f FILE..."; proxies keep serving their tables meanwhile`
  );
}

async function readOptionalFile(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const errno = error as NodeJS.ErrnoException;
    if (errno.code === 'ENOENT') {
      return undefined;
    }
    // A read that fails after the open, such as on a directory, names no path.
    errno.path ??= path;
    throw error;
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
