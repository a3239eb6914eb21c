import { closeSync, openSync } from 'node:fs';
import { once } from 'node:events';

import { pino } from 'pino';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import {
  lineField,
  MAX_DIGITS,
  MAX_MILLISECONDS_BYTES,
  methodFieldBytes,
  statusFieldBytes,
  writeDigits,
  writeMilliseconds,
  type LineField,
} from './line-bytes.js';

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

/**
 * Bytes collected before a batch is written. sonic-boom writes each Buffer it is given with one
 * write call, which costs tens of µs whatever its size, so larger batches cost less per line.
 */
// Measured on the 2-core Intel Xeon VM with Node.js 20.20.2, pinned to one core: writing 64 KiB
// to a file on ext4 took 14 µs of CPU time with `fs.writeSync` and 27 µs with `fs.write`. The
// `fs.write` call returned after 10 µs and left the rest to the libuv thread pool.
export const BATCH_BYTES = 64 * 1024;
/** Maximum bytes of UTF-8 that one UTF-16 code unit of a line encodes to. */
const MAX_BYTES_PER_CHAR = 3;
/** Maximum time a line waits in memory before its batch is written, in milliseconds. */
export const BATCH_DELAY_MS = 100;
/** Route and target fields kept for reuse. */
const FIELD_CACHE_SIZE = 4096;
/** Upstream and target fields of a request that was not forwarded. */
const NO_TARGET_FIELDS = lineField(',"upstream":"","target":""');
const BYTES_SENT_FIELD = Buffer.from(',"bytesSent":');
const DURATION_FIELD = Buffer.from(',"durationMs":');
const LINE_END = Buffer.from('}\n');
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * The per-request access log: one JSON line per request on stdout or in a file, off by default.
 *
 * Lines have a fixed field order and are collected in memory as UTF-8. Most are written as
 * bytes straight into the batch, from route and target fields that are encoded once and
 * reused. A line that needs escapes is built as a string and encoded. A batch goes to sonic-boom
 * (`pino.destination`, synchronous for a file and asynchronous for stdout) once the next line
 * might not fit in {@link BATCH_BYTES}, or {@link BATCH_DELAY_MS} after its first line, so a
 * busy proxy makes a few write calls per second instead of one per request:
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
  /** Set once a write failed with EPIPE: pino's handler then turns `end` into a no-op. */
  #brokenPipe = false;
  #closed = false;
  /** Settles once the file that {@link reopen} asked for is open; undefined before a reopen. */
  #reopened: Promise<unknown> | undefined;
  /** Lines not yet handed to the destination, as UTF-8 in the first `#batchLength` bytes. */
  #batch: Buffer;
  #batchLength = 0;
  #flushTimer: NodeJS.Timeout | undefined;
  /** `,"route":NAME` by route name. */
  readonly #routeFields = new Map<string, LineField>();
  /** `,"upstream":NAME,"target":ORIGIN` by upstream and origin. */
  readonly #targetFields = new Map<string, LineField>();
  /** The same fields by target object, so the request path builds no key. */
  readonly #targetObjectFields = new WeakMap<UpstreamTarget, LineField>();
  /** `Date.now()` of the previous line and the line start built from it. */
  #lastTime = 0;
  #lineStart = lineField('{"time":0');

  private constructor(
    destination: Destination | undefined,
    logger: Logger | undefined,
    file?: string,
  ) {
    this.#destination = destination;
    this.#logger = logger;
    this.#file = file;
    this.#batch = Buffer.allocUnsafeSlow(destination === undefined ? 0 : BATCH_BYTES);
    destination?.on('error', (err: NodeJS.ErrnoException) => this.#onError(err));
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
      return new AccessLog(pino.destination({ dest: 1, sync: false, contentMode: 'buffer' }), log);
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
    // A file is written synchronously, because a batch written to the page cache costs less
    // than handing it to the libuv thread pool. A pipe (stdout) stays asynchronous: sonic-boom
    // sleeps on a full pipe in synchronous mode, which would stop the event loop.
    // NOTE: a file system that stalls a write stalls the event loop for as long.
    return new AccessLog(
      pino.destination({ dest: destination, sync: true, contentMode: 'buffer' }),
      log,
      destination,
    );
  }

  /** True when lines are written; check it before building an entry on the request path. */
  get enabled(): boolean {
    return this.#destination !== undefined;
  }

  /** Writes one line for a finished request; does nothing when the log is disabled. */
  write(entry: AccessLogEntry): void {
    if (this.#destination === undefined) {
      return;
    }

    const targetFields =
      entry.upstream === '' && entry.target === ''
        ? NO_TARGET_FIELDS
        : this.#targetFieldsOf(entry.upstream, entry.target);
    this.#append(
      entry.route,
      entry.method,
      entry.path,
      entry.status,
      targetFields,
      entry.bytesSent,
      entry.durationSeconds,
    );
  }

  /**
   * Writes one line for a finished request, like {@link write}, from the values the proxy
   * holds: `target` is the target of the last attempt, undefined when the request was not
   * forwarded. The route and target fields are built once and reused.
   */
  writeRequest(
    route: string,
    method: string,
    path: string,
    status: number,
    target: UpstreamTarget | undefined,
    bytesSent: number,
    durationSeconds: number,
  ): void {
    if (this.#destination === undefined) {
      return;
    }

    let targetFields = NO_TARGET_FIELDS;
    if (target !== undefined) {
      const known = this.#targetObjectFields.get(target);
      if (known === undefined) {
        targetFields = this.#targetFieldsOf(target.upstream, target.origin);
        this.#targetObjectFields.set(target, targetFields);
      } else {
        targetFields = known;
      }
    }
    this.#append(route, method, path, status, targetFields, bytesSent, durationSeconds);
  }

  #append(
    route: string,
    method: string,
    path: string,
    status: number,
    targetFields: LineField,
    bytesSent: number,
    durationSeconds: number,
  ): void {
    if (this.#failed || this.#closed) {
      return;
    }

    // Lines of the same millisecond share the start, which saves a number conversion.
    const now = Date.now();
    if (now !== this.#lastTime) {
      this.#lastTime = now;
      this.#lineStart = lineField('{"time":' + now);
    }
    const routeField = this.#routeFieldOf(route);
    const query = path.indexOf('?');
    const pathEnd = query === -1 ? path.length : query;
    const written = this.#appendBytes(
      routeField,
      method,
      path,
      pathEnd,
      status,
      targetFields,
      bytesSent,
      durationSeconds,
    );
    if (!written) {
      this.#appendText(
        this.#lineStart.text +
          routeField.text +
          ',"method":' +
          quoteMethod(method) +
          ',"path":' +
          quoteString(path.slice(0, pathEnd)) +
          ',"status":' +
          status +
          targetFields.text +
          ',"bytesSent":' +
          bytesSent +
          ',"durationMs":' +
          formatMilliseconds(durationSeconds) +
          '}\n',
      );
    }
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(flushLater, BATCH_DELAY_MS, this);
      this.#flushTimer.unref();
    }
  }

  /**
   * Writes a line as bytes straight into the batch. Returns false, having written nothing that
   * counts, for a line that is built as a string instead. These are lines with
   * - a path with other characters than printable ASCII, or with `"` or `\\`,
   * - a method outside the standard ones,
   * - a status that is not an integer from 0 to 999,
   * - a byte count that is not a safe integer of 0 or more,
   * - a duration above `Number.MAX_SAFE_INTEGER` microseconds,
   * - more bytes than a batch holds.
   */
  #appendBytes(
    routeField: LineField,
    method: string,
    path: string,
    pathEnd: number,
    status: number,
    targetFields: LineField,
    bytesSent: number,
    durationSeconds: number,
  ): boolean {
    const methodField = methodFieldBytes(method);
    const statusField = statusFieldBytes(status);
    const micros = Math.round(durationSeconds * 1e6);
    if (
      methodField === undefined ||
      statusField === undefined ||
      !Number.isSafeInteger(bytesSent) ||
      bytesSent < 0 ||
      micros > Number.MAX_SAFE_INTEGER
    ) {
      return false;
    }
    const lineStart = this.#lineStart.bytes;
    const maxLength =
      lineStart.length +
      routeField.bytes.length +
      methodField.length +
      pathEnd +
      statusField.length +
      targetFields.bytes.length +
      BYTES_SENT_FIELD.length +
      MAX_DIGITS +
      DURATION_FIELD.length +
      MAX_MILLISECONDS_BYTES +
      LINE_END.length;
    if (this.#batchLength + maxLength > this.#batch.length) {
      this.flush();
      if (maxLength > this.#batch.length) return false;
    }

    const batch = this.#batch;
    let offset = this.#batchLength;
    batch.set(lineStart, offset);
    offset += lineStart.length;
    batch.set(routeField.bytes, offset);
    offset += routeField.bytes.length;
    batch.set(methodField, offset);
    offset += methodField.length;
    for (let i = 0; i < pathEnd; i++) {
      const code = path.charCodeAt(i);
      if (code < 0x20 || code > 0x7e || code === QUOTE || code === BACKSLASH) return false;
      batch[offset++] = code;
    }
    batch.set(statusField, offset);
    offset += statusField.length;
    batch.set(targetFields.bytes, offset);
    offset += targetFields.bytes.length;
    batch.set(BYTES_SENT_FIELD, offset);
    offset = writeDigits(batch, offset + BYTES_SENT_FIELD.length, bytesSent);
    batch.set(DURATION_FIELD, offset);
    offset = writeMilliseconds(batch, offset + DURATION_FIELD.length, micros);
    batch.set(LINE_END, offset);
    this.#batchLength = offset + LINE_END.length;
    return true;
  }

  /** Encodes a line built as a string into the batch; see {@link #appendBytes} for which. */
  #appendText(line: string): void {
    // Each line is encoded while its parts are still in the CPU cache. A batch kept as one
    // string would be a tree of thousands of pieces, spread over the young generation, that
    // the encoding at flush time walks and copies.
    if (this.#batchLength + line.length * MAX_BYTES_PER_CHAR > this.#batch.length) {
      this.flush();
      if (line.length * MAX_BYTES_PER_CHAR > this.#batch.length) {
        // A line longer than a batch (a path of many KiB) goes out on its own.
        this.#destination?.write(Buffer.from(line) as unknown as string);
        return;
      }
    }
    this.#batchLength += this.#batch.write(line, this.#batchLength);
  }

  /**
   * Returns the route field of a line. Route names repeat on every line, so the field is kept;
   * the cache starts over when it passes {@link FIELD_CACHE_SIZE}.
   */
  #routeFieldOf(route: string): LineField {
    let field = this.#routeFields.get(route);
    if (field === undefined) {
      if (this.#routeFields.size >= FIELD_CACHE_SIZE) this.#routeFields.clear();
      field = lineField(',"route":' + JSON.stringify(route));
      this.#routeFields.set(route, field);
    }
    return field;
  }

  /** Returns the upstream and target fields of a line, kept like the route field. */
  #targetFieldsOf(upstream: string, target: string): LineField {
    const key = upstream + '\n' + target;
    let fields = this.#targetFields.get(key);
    if (fields === undefined) {
      if (this.#targetFields.size >= FIELD_CACHE_SIZE) this.#targetFields.clear();
      fields = lineField(
        ',"upstream":' + JSON.stringify(upstream) + ',"target":' + JSON.stringify(target),
      );
      this.#targetFields.set(key, fields);
    }
    return fields;
  }

  /** Hands the lines collected so far to the destination; the batch timer calls it. */
  flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#batchLength === 0) {
      return;
    }
    // The destination takes Buffers (contentMode 'buffer') and keeps each one until its write
    // completes, so the next batch gets a new Buffer. In string mode sonic-boom would encode
    // its pending string again after every write to find what is left.
    const batch = this.#batch.subarray(0, this.#batchLength);
    // NOTE: a new Buffer per batch lives until garbage collection frees it. A synchronous file
    // destination is done with the Buffer when `write` returns, so it could be reused.
    this.#batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
    this.#batchLength = 0;
    if (!this.#failed && !this.#closed) {
      this.#destination?.write(batch as unknown as string);
    }
  }

  /** Reopens the file after log rotation moved it (send SIGHUP to the proxy); resumes writing. */
  reopen(): void {
    if (this.#destination === undefined || this.#file === undefined || this.#closed) {
      return;
    }
    this.flush();
    this.#failed = false;
    // 'error' rejects the wait, and #onError logs it.
    this.#reopened = once(this.#destination, 'ready').catch(() => undefined);
    try {
      this.#destination.reopen();
    } catch {
      // A file that cannot be opened throws here in synchronous mode, and sonic-boom emits the
      // same error as 'error' on the next tick.
    }
  }

  /** Writes out buffered lines and closes the file; stdout stays open. */
  async close(): Promise<void> {
    const destination = this.#destination;
    if (destination === undefined || this.#closed) {
      return;
    }
    this.flush();
    this.#closed = true;
    // sonic-boom 4.2 drops a reopen that waits for a write when end() comes first, and then
    // never closes, so the end waits for the reopened file.
    await this.#reopened;
    if (this.#brokenPipe) {
      return;
    }
    // An error while the last lines go out rejects the wait; #onError has logged it, and the
    // shutdown goes on.
    const closed = once(destination, 'close').catch(() => undefined);
    destination.end();
    await closed;
  }

  #onError(err: NodeJS.ErrnoException): void {
    if (err.code === 'EPIPE') {
      this.#brokenPipe = true;
    }
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

/**
 * Returns `value` as a JSON string. Printable ASCII without `"` and `\\`, which is what request
 * paths nearly always are, is quoted as it is; anything else goes through `JSON.stringify`.
 */
function quoteString(value: string): string {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code > 0x7e || code === 0x22 || code === 0x5c) {
      return JSON.stringify(value);
    }
  }
  return '"' + value + '"';
}

/**
 * Formats seconds as milliseconds rounded to the microsecond, the same text that
 * `String(Math.round(seconds * 1e6) / 1e3)` gives (`1.2`, `0.034`, `15`). It works on integers,
 * because converting a fraction to text costs about three times as much: 180 ns against 58 ns
 * per call in a loop on the 2-core AMD EPYC VM with Node.js 20.20.2. NaN and negative values
 * give `0`.
 */
function formatMilliseconds(seconds: number): string {
  const micros = Math.round(seconds * 1e6);
  if (!(micros >= 0)) {
    // NaN would make the line invalid JSON; a clock never runs backwards, so neither occurs.
    return '0';
  }
  if (micros > Number.MAX_SAFE_INTEGER) {
    return String(micros / 1e3);
  }
  const whole = Math.floor(micros / 1000);
  let fraction = micros - whole * 1000;
  if (fraction === 0) {
    return String(whole);
  }

  let digits = 3;
  while (fraction % 10 === 0) {
    fraction /= 10;
    digits--;
  }
  const text = String(fraction);
  return whole + '.' + '00'.slice(0, digits - text.length) + text;
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
