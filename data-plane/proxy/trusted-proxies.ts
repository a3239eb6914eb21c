import { BlockList, isIP } from 'node:net';
import { LoomError } from '../../common/errors.js';

/**
 * The peers whose `X-Forwarded-*` and `Forwarded` headers the proxy keeps: a list of addresses
 * and CIDR ranges, IPv4 and IPv6. An IPv4-mapped IPv6 peer (`::ffff:10.1.2.3`, as a dual-stack
 * listener reports IPv4 clients) matches the IPv4 entries.
 */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly size: number;

  /**
   * Parses entries such as `10.0.0.0/8`, `127.0.0.1` or `fd00::/8`.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` naming every invalid entry.
   */
  constructor(entries: readonly string[]) {
    const invalid: string[] = [];
    for (const entry of entries) {
      if (!this.#add(entry.trim())) invalid.push(entry);
    }
    if (invalid.length > 0) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid trusted proxy ${invalid.map((entry) => JSON.stringify(entry)).join(', ')}: ` +
          'expected an IPv4 or IPv6 address or CIDR range such as 10.0.0.0/8 or 127.0.0.1',
      );
    }
    this.size = entries.length;
  }

  /** Tells whether `address`, a socket's remote address, is a trusted proxy. */
  includes(address: string | undefined): boolean {
    if (address === undefined || this.size === 0) {
      return false;
    }
    if (address.startsWith('::ffff:') && address.includes('.')) {
      return this.#list.check(address.slice(7), 'ipv4');
    }
    return this.#list.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
  }

  #add(entry: string): boolean {
    const slash = entry.indexOf('/');
    const address = slash === -1 ? entry : entry.slice(0, slash);
    const family = isIP(address);
    if (family === 0) {
      return false;
    }
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (slash === -1) {
      this.#list.addAddress(address, type);
      return true;
    }

    const prefixText = entry.slice(slash + 1);
    const prefix = Number(prefixText);
    if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 6 ? 128 : 32)) {
      return false;
    }
    this.#list.addSubnet(address, prefix, type);
    return true;
  }
}
