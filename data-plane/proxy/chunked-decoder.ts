import { PROXY_ERRORS, type ProxyError } from './error-response.js';

/** Maximum bytes of one chunk-size line with its extensions, and of the trailer section. */
const MAX_LINE_BYTES = 16 * 1024;

/** A chunk-size line: hex digits, then optional extensions after `;` (RFC 9112 section 7.1.1). */
const CHUNK_SIZE_LINE = /^([0-9A-Fa-f]+)(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?$/;

/** A trailer field line: a token name, a colon, and a value without control characters. */
const FIELD_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/;

/** Rejection of a chunked body, with the error response that the client gets. */
export class ChunkedBodyError extends Error {
  readonly response: ProxyError;

  constructor(message: string, response: ProxyError = PROXY_ERRORS.invalidChunkedBody) {
    super(message);
    this.response = response;
  }
}

/**
 * Decoder of a chunked request body (RFC 9112 section 7.1) that Node.js hands over unparsed,
 * as it does with the socket of an upgrade request. It finds where the body ends, so the bytes
 * after it belong to the next protocol. Lines must end with CRLF, and chunk extensions and
 * trailer fields are checked and then dropped, which RFC 9112 section 7.1.2 allows a recipient
 * that removes the chunked coding.
 */
export class ChunkedDecoder {
  #state: 'size' | 'data' | 'data-end' | 'trailers' | 'done' = 'size';
  /** The line read so far, without its line end. */
  #line = '';
  /** Bytes of the current chunk still to come. */
  #remaining = 0;
  #trailerBytes = 0;
  /** Decoded body bytes so far. */
  bodyBytes = 0;
  readonly #maxBodyBytes: number;

  /** `maxBodyBytes` is the largest decoded body; 0 means no limit. */
  constructor(maxBodyBytes: number) {
    this.#maxBodyBytes = maxBodyBytes;
  }

  /** True once the last chunk and the trailer section were read. */
  get done(): boolean {
    return this.#state === 'done';
  }

  /**
   * Decodes `input` and passes each run of body bytes to `onData`. Returns the bytes after the
   * end of the body, or undefined while the body goes on. Throws `ChunkedBodyError` on invalid
   * framing or a body over the limit.
   */
  decode(input: Buffer, onData: (data: Buffer) => void): Buffer | undefined {
    let offset = 0;
    while (this.#state !== 'done') {
      if (offset === input.length) return undefined;
      if (this.#state === 'data') {
        const end = Math.min(input.length, offset + this.#remaining);
        this.#remaining -= end - offset;
        onData(input.subarray(offset, end));
        offset = end;
        if (this.#remaining === 0) this.#state = 'data-end';
        continue;
      }
      const next = this.#readLine(input, offset);
      if (next === -1) return undefined;
      offset = next;
      this.#takeLine();
    }
    return input.subarray(offset);
  }

  /**
   * Appends the bytes up to the next LF to the current line. Returns the offset after the LF, or
   * -1 when the line goes on in later input.
   */
  #readLine(input: Buffer, offset: number): number {
    const lf = input.indexOf(0x0a, offset);
    this.#line += input.toString('latin1', offset, lf === -1 ? input.length : lf);
    if (this.#line.length > MAX_LINE_BYTES) {
      throw this.#state === 'trailers'
        ? new ChunkedBodyError('trailer section too large', PROXY_ERRORS.requestTrailersTooLarge)
        : new ChunkedBodyError('chunk-size line too long', PROXY_ERRORS.chunkExtensionsTooLarge);
    }
    if (lf === -1) return -1;
    if (!this.#line.endsWith('\r')) {
      throw new ChunkedBodyError('a line of the chunked body ends without CR before LF');
    }
    this.#line = this.#line.slice(0, -1);
    return lf + 1;
  }

  /** Acts on the complete line in `#line` according to the state, then clears it. */
  #takeLine(): void {
    const line = this.#line;
    this.#line = '';
    if (this.#state === 'size') {
      const match = CHUNK_SIZE_LINE.exec(line);
      const size = match === null ? NaN : parseInt(match[1], 16);
      if (!Number.isSafeInteger(size)) {
        throw new ChunkedBodyError(`invalid chunk-size line ${JSON.stringify(line)}`);
      }
      this.bodyBytes += size;
      if (this.#maxBodyBytes > 0 && this.bodyBytes > this.#maxBodyBytes) {
        throw new ChunkedBodyError(
          `body of at least ${this.bodyBytes} bytes exceeds the limit of ${this.#maxBodyBytes}`,
          PROXY_ERRORS.payloadTooLarge,
        );
      }
      this.#remaining = size;
      this.#state = size === 0 ? 'trailers' : 'data';
    } else if (this.#state === 'data-end') {
      if (line !== '') throw new ChunkedBodyError('chunk data longer than its chunk-size');
      this.#state = 'size';
    } else if (line === '') {
      this.#state = 'done';
    } else {
      this.#trailerBytes += line.length + 2;
      if (this.#trailerBytes > MAX_LINE_BYTES) {
        throw new ChunkedBodyError(
          'trailer section too large',
          PROXY_ERRORS.requestTrailersTooLarge,
        );
      }
      if (!FIELD_LINE.test(line)) {
        throw new ChunkedBodyError(`invalid trailer field line ${JSON.stringify(line)}`);
      }
    }
  }
}
