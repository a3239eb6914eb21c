import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/** Settings for the root logger of a Loom process. */
export interface LoggerSettings {
  /** pino level name; defaults to LOOM_LOG_LEVEL, then "info". */
  level?: string;
  /** Human-readable output through pino-pretty instead of JSON lines. */
  pretty?: boolean;
  /** Process role, added to every line. */
  name: string;
}

/** Field paths whose values are secrets and never appear in logs. */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'token',
  'password',
  'etcd.password',
];

/** Creates the root logger. Components take `logger.child({ component })` from it. */
export function createLogger(settings: LoggerSettings): Logger {
  const options: LoggerOptions = {
    name: settings.name,
    level: settings.level ?? process.env.LOOM_LOG_LEVEL ?? 'info',
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (settings.pretty) {
    options.transport = { target: 'pino-pretty', options: { destination: 2, singleLine: true } };
    return pino(options);
  }
  return pino(options, pino.destination({ dest: 2, sync: false }));
}
