import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';

import { LoomError } from './errors.js';

export type { Logger } from 'pino';

/** Settings for the root logger of a Loom process. */
export interface LoggerSettings {
  /** pino level name; defaults to LOOM_LOG_LEVEL, then "info". */
  level?: string;
  /** Human-readable output through pino-pretty instead of JSON lines. */
  pretty?: boolean;
  /** Process role, added to every line. */
  name: string;
  /** Destination of the JSON lines in place of stderr, for tests; ignored with `pretty`. */
  destination?: DestinationStream;
}

/** Level names that `--log-level` and LOOM_LOG_LEVEL accept. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** Field paths whose values are secrets and never appear in logs. */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'authorization',
  'token',
  'password',
  'etcdPassword',
  '*.authorization',
  '*.token',
  '*.password',
  '*.etcdPassword',
  'etcd.password',
];

/**
 * Creates the root logger, writing JSON lines to stderr. Components take
 * `logger.child({ component })` from it.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when the level is not one of {@link LOG_LEVELS}.
 */
export function createLogger(settings: LoggerSettings): Logger {
  const fromEnvironment = settings.level === undefined && process.env.LOOM_LOG_LEVEL;
  const level = settings.level ?? (process.env.LOOM_LOG_LEVEL || 'info');
  if (!LOG_LEVELS.includes(level)) {
    const source = fromEnvironment ? 'LOOM_LOG_LEVEL' : '--log-level';
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${source} "${level}"; use one of ${LOG_LEVELS.join(', ')}`,
    );
  }

  const options: LoggerOptions = {
    name: settings.name,
    level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (settings.pretty) {
    // Formatted on the main thread: a transport's worker thread delays the exit by up to 10 s
    // when stderr is a pipe whose reader is gone.
    // Only `err` contains an Error object. Loom logs messages as `error` strings, which pino-pretty
    // would otherwise print on a line of their own, apart from the line that grep finds.
    const stream = pretty({
      destination: 2,
      singleLine: true,
      sync: true,
      errorLikeObjectKeys: ['err'],
    });
    return pino(options, stream);
  }
  // Synchronous writes, which is also pino's default. In asynchronous mode pino flushes at exit
  // with sonic-boom's flushSync, and sonic-boom 4.2 retries a write that fails with EPIPE there
  // forever, so a process whose stderr reader was gone never exited. A synchronous EPIPE reaches
  // pino's handler at once, which stops logging. NOTE: a full pipe blocks the process instead.
  return pino(options, settings.destination ?? pino.destination({ dest: 2, sync: true }));
}
