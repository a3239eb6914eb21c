/** A header name as received and in lower case. */
export interface HeaderName {
  /** The name's bytes as latin1 text, in the case the upstream sent. */
  readonly text: string;
  readonly lower: string;
  /** A copy of the bytes, compared on each lookup. */
  readonly bytes: Uint8Array;
}

/** Number of cache slots, a power of two so that a mask picks the slot. */
const SLOTS = 256;
/** Maximum length of a cached name, in bytes. Longer names are rare and converted each time. */
const MAX_CACHED_LENGTH = 48;

/**
 * A direct-mapped cache of the header names that upstream responses carry, keyed by their bytes.
 * undici hands over each name as a Buffer, and an upstream sends the same few names on every
 * response. A hit costs a byte comparison instead of a string conversion and a lower-casing.
 * Two names that map to one slot replace each other, so a miss is only slower, never wrong.
 */
// Measured on the 2-core AMD EPYC VM with Node.js 20.20.2: `toString('latin1')` of a 12-byte
// name takes 100 to 230 ns depending on load, the byte loop below 30 ns, `Buffer.equals` 92 ns.
export class HeaderNameCache {
  readonly #slots: (HeaderName | undefined)[] = new Array<HeaderName | undefined>(SLOTS).fill(
    undefined,
  );

  /** Returns the text and lower-case text of a raw header name. */
  lookup(name: Buffer): HeaderName {
    const length = name.length;
    if (length === 0 || length > MAX_CACHED_LENGTH) {
      return toHeaderName(name);
    }

    const slot = (length * 31 + name[0] * 7 + name[length - 1]) & (SLOTS - 1);
    const cached = this.#slots[slot];
    if (cached !== undefined && sameBytes(cached.bytes, name)) {
      return cached;
    }
    const entry = toHeaderName(name);
    this.#slots[slot] = entry;
    return entry;
  }
}

function toHeaderName(name: Buffer): HeaderName {
  const text = name.toString('latin1');
  return { text, lower: text.toLowerCase(), bytes: Uint8Array.from(name) };
}

/** Compares two short byte arrays. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) {
    return false;
  }
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
}
