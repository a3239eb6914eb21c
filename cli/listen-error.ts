import { isIP } from 'node:net';

import { formatHostPort, parseHostPort, type HostPort } from '../common/address.js';
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
  // A sibling on the same port under another name (localhost next to 127.0.0.1) is the likely
  // holder, which `checkDistinctListeners` cannot see without resolving names.
  const sibling =
    failure.code === 'EADDRINUSE'
      ? listeners.find((other) => other !== listener && portOf(other) === port)
      : undefined;
  const reason =
    sibling === undefined
      ? REASONS[failure.code]
      : `address already in use; ${sibling.flag} ${JSON.stringify(sibling.address)} of this ` +
        `process binds port ${port} too, perhaps on the same address; give each listener its ` +
        'own port';
  return new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `cannot listen on ${formatHostPort(host, port)} (${listener.flag}): ${reason}`,
    { cause: error },
  );
}

function portOf(listener: ListenerFlag): number | undefined {
  try {
    return parseHostPort(listener.address, listener.flag).port;
  } catch {
    return undefined;
  }
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

/**
 * Checks that no two listeners bind the same port: the same host and port, or a port that a
 * wildcard host (`0.0.0.0`, or `::`, which takes IPv4 too) already covers. Port 0 never clashes,
 * because each listener gets a free port of its own. Addresses that do not parse are skipped,
 * because their own check reports them.
 *
 * NOTE: host names are not resolved, so `localhost:P` next to `127.0.0.1:P` or `0.0.0.0:P`
 * passes here and fails when the second listener binds; `describeListenError` then names both.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming both flags and their values.
 */
export function checkDistinctListeners(listeners: ListenerFlag[]): void {
  const parsed = listeners.flatMap((listener) => {
    try {
      return [{ ...listener, ...parseHostPort(listener.address, listener.flag) }];
    } catch {
      return [];
    }
  });
  for (const [index, later] of parsed.entries()) {
    const earlier = parsed.slice(0, index).find((candidate) => sharePort(candidate, later));
    if (earlier === undefined) continue;
    const overlap =
      earlier.host.toLowerCase() === later.host.toLowerCase()
        ? 'names the same address'
        : `binds port ${later.port} too`;
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${later.flag} ${JSON.stringify(later.address)}: ${earlier.flag} ` +
        `${JSON.stringify(earlier.address)} ${overlap}; give each listener its own port`,
    );
  }
}

function sharePort(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port || a.port === 0) return false;
  const hostA = a.host.toLowerCase();
  const hostB = b.host.toLowerCase();
  if (hostA === hostB || hostA === '::' || hostB === '::') return true;
  // `0.0.0.0` covers IPv4 addresses only, and a host name may resolve to IPv6.
  if (hostA === '0.0.0.0') return isIP(hostB) === 4;
  if (hostB === '0.0.0.0') return isIP(hostA) === 4;
  return false;
}
