import { closeSync, openSync } from 'node:fs';
import { once } from 'node:events';

import { pino } from 'pino';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

/** One finished request, as the proxy reports it to {@link AccessLog.write}. */
export interface AccessLogEntry {
  /** Route name, or `(unmatched)` when no route matched. */
  route: string;
  method: string;
  /** Request target as received; everything from `?` on is dropped before writing. */
  path: string;
  /** Status sent to the client; 0 when the connection closed before a response was sent. */
  status: number;
  /** Upstream name; empty when the request was not forwarded. */
  upstream: string;
  /** Origin of the upstream target; empty when the request was not forwarded. */
  target: string;
  /** Response body bytes written to the client. */
  bytesSent: number;
  /** Seconds from the arrival of the request to the end of the response. */
  durationSeconds: number;
}

type Destination = ReturnType<typeof pino.destination>;

/** Characters collected before a batch is written; sonic-boom's largest single write is 16 KiB. */
export const BATCH_CHARS = 16 * 1024;
/** Maximum time a line waits in memory before its batch is written, in milliseconds. */
export const BATCH_DELAY_MS = 100;
/** Quoted route, upstream and target names kept for reuse. */
const QUOTE_CACHE_SIZE = 4096;

/**
 * The per-request access log: one JSON line per request on stdout or in a file, off by default.
 *
 * Lines are built by string concatenation in a fixed field order and collected in memory; a
 * batch goes to sonic-boom (`pino.destination`, asynchronous mode) once it reaches
 * {@link BATCH_CHARS} characters or {@link BATCH_DELAY_MS} after its first line, so a busy proxy
 * makes a few write calls per second instead of one per request:
 *
 * `{"time":1733330000000,"route":"get-user","method":"GET","path":"/users/42","status":200,`
 * `"upstream":"users","target":"http://127.0.0.1:9001","bytesSent":120,"durationMs":1.234}`
 *
 * Query strings are never written because they often carry tokens. A failed write (disk full,
 * file removed) is logged once as a warning and later lines are dropped until {@link reopen}.
 * A process that crashes loses the lines of the batch in memory, at most {@link BATCH_DELAY_MS}
 * worth of requests.
 */
export class AccessLog {
  readonly #destination: Destination | undefined;
  readonly #logger: Logger | undefined;
  /** Path of the file; undefined for stdout and for a disabled log. */
  readonly #file: string | undefined;
  #failed = false;
  #closed = false;
  /** Lines not yet handed to the destination. */
  #batch = '';
  #flushTimer: NodeJS.Timeout | undefined;
  readonly #quoted = new Map<string, string>();

  private constructor(
    destination: Destination | undefined,
    logger: Logger | undefined,
    file?: string,
  ) {
    this.#destination = destination;
    this.#logger = logger;
    this.#file = file;
    destination?.on('error', (err: Error) => this.#onError(err));
  }

  /** An access log that writes nothing; `enabled` is false. */
  static disabled(): AccessLog {
    return new AccessLog(undefined, undefined);
  }

  /**
   * Opens the access log named by `--access-log`: `stdout`, or a file path that is created or
   * appended to. Undefined, `off` or an empty string give a disabled log.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when the file cannot be opened for appending.
   */
  static open(destination: string | undefined, logger: Logger): AccessLog {
    if (destination === undefined || destination === '' || destination === 'off') {
      return AccessLog.disabled();
    }
    const log = logger.child({ component: 'access-log' });
    if (destination === 'stdout') {
      return new AccessLog(pino.destination({ dest: 1, sync: false }), log);
    }

    try {
      closeSync(openSync(destination, 'a'));
    } catch (error) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `cannot open access log ${JSON.stringify(destination)}: ${(error as Error).message}; ` +
          'pass --access-log stdout or the path of a writable file',
        { cause: error },
      );
    }
    return new AccessLog(pino.destination({ dest: destination, sync: false }), log, destination);
  }

  /** True when lines are written; check it before building an entry on the request path. */
  get enabled(): boolean {
    return this.#destination !== undefined;
  }

  /** Writes one line for a finished request; does nothing when the log is disabled. */
  write(entry: AccessLogEntry): void {
    const destination = this.#destination;
    if (destination === undefined || this.#failed || this.#closed) {
      return;
    }

    const query = entry.path.indexOf('?');
    const path = query === -1 ? entry.path : entry.path.slice(0, query);
    this.#batch +=
      '{"time":' +
      Date.now() +
      ',"route":' +
      this.#quote(entry.route) +
      ',"method":' +
      quoteMethod(entry.method) +
      ',"path":' +
      JSON.stringify(path) +
      ',"status":' +
      entry.status +
      ',"upstream":' +
      this.#quote(entry.upstream) +
      ',"target":' +
      this.#quote(entry.target) +
      ',"bytesSent":' +
      entry.bytesSent +
      ',"durationMs":' +
      Math.round(entry.durationSeconds * 1e6) / 1e3 +
      '}\n';
    if (this.#batch.length >= BATCH_CHARS) {
      this.flush();
    } else if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(flushLater, BATCH_DELAY_MS, this);
      this.#flushTimer.unref();
    }
  }

  /**
   * Returns `value` as a JSON string. Route, upstream and target names repeat on every line, so
   * their quoted forms are kept; the cache starts over when it passes {@link QUOTE_CACHE_SIZE}.
   */
  #quote(value: string): string {
    let quoted = this.#quoted.get(value);
    if (quoted === undefined) {
      if (this.#quoted.size >= QUOTE_CACHE_SIZE) this.#quoted.clear();
      quoted = JSON.stringify(value);
      this.#quoted.set(value, quoted);
    }
    return quoted;
  }

  /** Hands the lines collected so far to the destination; the batch timer calls it. */
  flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    const batch = this.#batch;
    this.#batch = '';
    if (batch !== '' && !this.#failed && !this.#closed) this.#destination?.write(batch);
  }

  /** Reopens the file after log rotation moved it (send SIGHUP to the proxy); resumes writing. */
  reopen(): void {
    if (this.#destination === undefined || this.#file === undefined || this.#closed) {
      return;
    }
    this.flush();
    this.#failed = false;
    this.#destination.reopen();
  }

  /** Writes out buffered lines and closes the file; stdout stays open. */
  async close(): Promise<void> {
    const destination = this.#destination;
    if (destination === undefined || this.#closed) {
      return;
    }
    this.flush();
    this.#closed = true;
    const closed = once(destination, 'close');
    destination.end();
    await closed;
  }

  #onError(err: Error): void {
    if (this.#failed) {
      return;
    }
    this.#failed = true;
    this.#logger?.warn({ err }, 'access log write failed, lines dropped until reopened');
  }
}

function flushLater(log: AccessLog): void {
  log.flush();
}

/** Quotes a request method; the standard ones without building a string. */
function quoteMethod(method: string): string {
  switch (method) {
    case 'GET':
      return '"GET"';
    case 'HEAD':
      return '"HEAD"';
    case 'POST':
      return '"POST"';
    case 'PUT':
      return '"PUT"';
    case 'DELETE':
      return '"DELETE"';
    case 'PATCH':
      return '"PATCH"';
    case 'OPTIONS':
      return '"OPTIONS"';
    default:
      // Any other method is client input, so it is never cached.
      return JSON.stringify(method);
  }
}
