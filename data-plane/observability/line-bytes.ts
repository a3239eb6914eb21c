/**
 * Pieces of an access log line written as bytes straight into a batch Buffer. A line joined
 * from strings allocates a string per piece, which the encoding then walks and copies again.
 */

/** A piece of a line kept for reuse, as text for a line built as a string and as UTF-8. */
export interface LineField {
  readonly text: string;
  readonly bytes: Buffer;
}

/** Returns a line field of `text`. */
export function lineField(text: string): LineField {
  return { text, bytes: Buffer.from(text) };
}

/**
 * `,"method":M,"path":"` for the standard methods, with the opening quote of the path. Any
 * other method is client input, so it is never kept.
 */
const METHOD_FIELDS: ReadonlyMap<string, Buffer> = new Map(
  ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'].map((method) => [
    method,
    Buffer.from(`,"method":"${method}","path":"`),
  ]),
);

/** Returns the bytes from the method field to the opening quote of the path, or undefined. */
export function methodFieldBytes(method: string): Buffer | undefined {
  return METHOD_FIELDS.get(method);
}

/** `","status":N` by status code, with the closing quote of the path, built on first use. */
const STATUS_FIELDS: (Buffer | undefined)[] = new Array<Buffer | undefined>(1000).fill(undefined);

/**
 * Returns the bytes from the closing quote of the path to the status value, or undefined for a
 * status that is not an integer from 0 to 999.
 */
export function statusFieldBytes(status: number): Buffer | undefined {
  if (!Number.isInteger(status) || status < 0 || status >= STATUS_FIELDS.length) {
    return undefined;
  }
  let field = STATUS_FIELDS[status];
  if (field === undefined) {
    field = Buffer.from(`","status":${status}`);
    STATUS_FIELDS[status] = field;
  }
  return field;
}

/** Maximum number of digits that `writeDigits` writes, the length of `Number.MAX_SAFE_INTEGER`. */
export const MAX_DIGITS = 16;

/** Writes a safe integer of 0 or more as decimal digits at `offset` and returns the end. */
export function writeDigits(batch: Buffer, offset: number, value: number): number {
  let length = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) length++;
  const end = offset + length;
  let rest = value;
  for (let i = end - 1; i >= offset; i--) {
    batch[i] = 0x30 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
  return end;
}

/** Maximum bytes that `writeMilliseconds` writes, for the digits, a point and three decimals. */
export const MAX_MILLISECONDS_BYTES = MAX_DIGITS + 4;

/**
 * Writes a duration of `micros` microseconds as milliseconds with up to three decimals and no
 * trailing zeros (`1.2`, `0.034`, `15`). For a safe integer of 0 or more, this is the text of
 * `String(micros / 1e3)`, and anything else gives `0`. Returns the offset after the text.
 */
export function writeMilliseconds(batch: Buffer, offset: number, micros: number): number {
  if (!Number.isSafeInteger(micros) || micros < 0) {
    batch[offset] = 0x30;
    return offset + 1;
  }
  const whole = Math.floor(micros / 1000);
  const fraction = micros - whole * 1000;
  let end = writeDigits(batch, offset, whole);
  if (fraction === 0) {
    return end;
  }

  const hundreds = Math.floor(fraction / 100);
  const tens = Math.floor(fraction / 10) % 10;
  const ones = fraction % 10;
  batch[end++] = 0x2e;
  batch[end++] = 0x30 + hundreds;
  if (tens !== 0 || ones !== 0) batch[end++] = 0x30 + tens;
  if (ones !== 0) batch[end++] = 0x30 + ones;
  return end;
}
