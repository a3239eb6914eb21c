import { LoomError } from './errors.js';

/** A parsed `host:port` listen or dial address. */
export interface HostPort {
  host: string;
  port: number;
}

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/;

/**
 * Parses `host:port` or `[ipv6]:port`; use `0.0.0.0:PORT` or `[::]:PORT` for
 * every interface. Port 0 is accepted, so a listener can pick a free port.
 * Throws a LoomError naming the option and the value when it is malformed.
 */
export function parseHostPort(value: string, option: string): HostPort {
  return parseAddress(value, option, 0);
}

/**
 * Parses an address to dial, which needs a port above 0. Throws a LoomError
 * naming the option and the value when it is malformed.
 */
export function parseDialAddress(value: string, option: string): HostPort {
  const address = parseAddress(value, option, 1);
  if (address.port === 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${option} ${JSON.stringify(value)}; port 0 cannot be dialed, expected HOST:PORT ` +
        'such as 127.0.0.1:7400',
    );
  }
  return address;
}

function parseAddress(value: string, option: string, lowestPort: 0 | 1): HostPort {
  const match = HOST_PORT.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${option} ${JSON.stringify(value)}; expected HOST:PORT such as 127.0.0.1:7400 ` +
        `or [::1]:7400, with a port from ${lowestPort} to 65535`,
    );
  }
  return { host: match[1] ?? match[2], port };
}

/**
 * Maximum length of the traffic address a proxy reports in its hello, in characters: a DNS name
 * of 253 characters, ":" and a five-digit port. A bracketed IPv6 address with a zone is shorter.
 */
export const MAX_PROXY_ADDRESS_LENGTH = 259;

/**
 * Returns why `address` cannot be the traffic address a proxy reports, or undefined when it can.
 * Shared fleet records apply it to their control-plane address too. The address must be `host:port` or `[ipv6]:port` as `--listen` accepts it, without the
 * surrounding spaces that `--listen` trims, and at most {@link MAX_PROXY_ADDRESS_LENGTH}
 * characters. Port 0 is valid, because a proxy started with it reports it.
 */
export function proxyAddressProblem(address: string): string | undefined {
  if (address === '') return 'is empty';
  if (address.length > MAX_PROXY_ADDRESS_LENGTH) {
    return `has ${address.length} characters; at most ${MAX_PROXY_ADDRESS_LENGTH} are allowed`;
  }
  if (/[\u0000-\u001f\u007f]/u.test(address)) return 'contains a control character';
  const match = HOST_PORT.exec(address);
  if (match === null || Number(match[3]) > 65535) {
    return 'is not HOST:PORT such as 10.0.0.7:8080 or [::1]:8080, with a port from 0 to 65535';
  }
  return undefined;
}

/** Formats a host and port for display and dialing, bracketing IPv6 hosts. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
