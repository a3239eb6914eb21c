import { formatHostPort, parseHostPort } from '../common/address.js';
import { LoomError } from '../common/errors.js';

/** A listener a server opens at start: the flag that set it and its `host:port`. */
export interface ListenerFlag {
  flag: string;
  address: string;
}

const REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use; stop the process that holds the port or pick another port',
  EACCES: 'permission denied; ports below 1024 need privileges, so pick a higher port',
  EADDRNOTAVAIL: 'address not available; use an address of this machine, such as 127.0.0.1',
};

/**
 * Converts a failed bind into `cannot listen on HOST:PORT (--flag): reason`.
 * Returns the error unchanged when it is not a bind failure of one of `listeners`.
 * When two flags name the same port, the later one is named, because its bind failed.
 */
export function describeListenError(error: unknown, listeners: ListenerFlag[]): unknown {
  const failure = bindFailure(error);
  if (failure === undefined) return error;

  const listener = [...listeners].reverse().find((candidate) => {
    const { port } = parseHostPort(candidate.address, candidate.flag);
    return port === failure.port || failure.port === undefined;
  });
  if (listener === undefined) return error;
  const { host, port } = parseHostPort(listener.address, listener.flag);
  return new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `cannot listen on ${formatHostPort(host, port)} (${listener.flag}): ${REASONS[failure.code]}`,
    { cause: error },
  );
}

function bindFailure(error: unknown): { code: string; port?: number } | undefined {
  const errno = error as NodeJS.ErrnoException & { port?: number };
  if (errno?.syscall === 'listen' && errno.code !== undefined && errno.code in REASONS) {
    return { code: errno.code, port: errno.port };
  }
  // NOTE: grpc-js reports a failed bind only as text, such as
  // "No address added ... [listen EADDRINUSE: address already in use 127.0.0.1:7400]".
  const message = error instanceof Error ? error.message : '';
  const match = /listen (EADDRINUSE|EACCES|EADDRNOTAVAIL)\b[^\]]*?:(\d+)\]/.exec(message);
  if (match === null) return undefined;
  return { code: match[1], port: Number(match[2]) };
}
