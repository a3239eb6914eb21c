import { LoomError } from './errors.js';

/** A parsed `host:port` listen or dial address. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port`, `[ipv6]:port` or `:port` (all interfaces). Throws a
 * LoomError naming the option and the value when it is malformed.
 */
export function parseHostPort(value: string, option: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${option} "${value}"; expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080`,
    );
  }
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

/** Formats a host and port for display and dialing, bracketing IPv6 hosts. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
