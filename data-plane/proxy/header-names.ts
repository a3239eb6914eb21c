/** A header name as received and in lower case, with the latest value converted under it. */
export interface HeaderName {
  /** The name's bytes as latin1 text, in the case the upstream sent. */
  readonly text: string;
  readonly lower: string;
  /** A copy of the bytes, compared on each lookup. */
  readonly bytes: Uint8Array;
  /** A copy of the bytes of the remembered value; undefined before the first one. */
  valueBytes: Uint8Array | undefined;
  /** The remembered value as latin1 text. */
  valueText: string;
  /** Values in a row that differed from the remembered one. */
  valueMisses: number;
}

/** Number of cache slots, a power of two so that a mask picks the slot. */
const SLOTS = 256;
/** Maximum length of a cached name, in bytes. Longer names are rare and converted each time. */
const MAX_CACHED_LENGTH = 48;
/** Maximum length of a remembered value, in bytes. */
const MAX_REMEMBERED_VALUE_LENGTH = 64;
/**
 * Values in a row that differ from the remembered one, after which a name stops remembering,
 * because its values change on every response (ETag, Set-Cookie) and each copy would be wasted.
 */
const MAX_VALUE_MISSES = 16;

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
      // The entry is not kept, so remembering a value in it would be wasted.
      const entry = toHeaderName(name);
      entry.valueMisses = MAX_VALUE_MISSES;
      return entry;
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

  /**
   * Returns a raw header value as latin1 text. Many values repeat under their name from one
   * response to the next (Date within a second, Content-Type, the Content-Length of a
   * fixed-size response), so `name` remembers its latest value, and a repeat costs a byte
   * comparison instead of a conversion.
   */
  valueText(name: HeaderName, value: Buffer): string {
    const remembered = name.valueBytes;
    if (remembered !== undefined && sameBytes(remembered, value)) {
      name.valueMisses = 0;
      return name.valueText;
    }
    const text = value.toString('latin1');
    if (name.valueMisses < MAX_VALUE_MISSES && value.length <= MAX_REMEMBERED_VALUE_LENGTH) {
      name.valueMisses++;
      name.valueBytes = new Uint8Array(value);
      name.valueText = text;
    }
    return text;
  }
}

function toHeaderName(name: Buffer): HeaderName {
  const text = name.toString('latin1');
  return {
    text,
    lower: text.toLowerCase(),
    bytes: Uint8Array.from(name),
    valueBytes: undefined,
    valueText: '',
    valueMisses: 0,
  };
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
