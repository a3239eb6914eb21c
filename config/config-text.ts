import type { Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';

import { ConfigError } from '../common/errors.js';

/**
 * Maximum size of one config file or of standard input, in bytes. V8 in Node.js 20 cannot make
 * a string of 2^29 - 23 or more UTF-16 code units (about 512 MiB of ASCII). Parsing a file near
 * that size would take gigabytes, so the read stops here with an error instead. As JSON,
 * 100,000 short routes take about 10 MB.
 */
export const MAX_CONFIG_BYTES = 256 * 1024 * 1024;

/** Size of each read from a file or standard input, in bytes. */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Reads a config file as UTF-8, also when it is a pipe that never ends. A character or block
 * device, such as `/dev/zero` or `/dev/sda`, is rejected before any read, because none holds a
 * config file and an endless one would be read up to `MAX_CONFIG_BYTES`.
 * @throws ConfigError when the file is a device, is larger than `MAX_CONFIG_BYTES` or is not
 *   valid UTF-8.
 */
export async function readConfigFile(file: string): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const stats = await handle.stat();
    if (stats.isCharacterDevice() || stats.isBlockDevice()) throw notAFile(file, stats);
    const chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await handle.read(chunk, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > MAX_CONFIG_BYTES) throw tooLarge(file);
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return decodeConfigText(file, Buffer.concat(chunks, size));
  } finally {
    await handle.close();
  }
}

/** Reads a stream to its end under the same limits as `readConfigFile`. */
export async function readConfigStream(
  name: string,
  stream: AsyncIterable<Buffer | string>,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += bytes.length;
    if (size > MAX_CONFIG_BYTES) throw tooLarge(name);
    chunks.push(bytes);
  }
  return decodeConfigText(name, Buffer.concat(chunks, size));
}

function notAFile(file: string, stats: Stats): ConfigError {
  const kind = stats.isCharacterDevice() ? 'a character device' : 'a block device';
  return new ConfigError([
    {
      file,
      field: '(file)',
      message:
        `cannot read config: it is ${kind}, not a regular file; pass a config file, a ` +
        'folder, or "-" to read standard input',
    },
  ]);
}

function tooLarge(file: string): ConfigError {
  return new ConfigError([
    {
      file,
      field: '(file)',
      message:
        `cannot read config: larger than ${MAX_CONFIG_BYTES / 1024 / 1024} MiB; ` +
        'split it into several files, or check that it names a config file and not a device',
    },
  ]);
}

/**
 * Decodes UTF-8 text. Invalid bytes are an error at their line and column, because decoding
 * would replace them with U+FFFD and store a value that the file does not contain.
 */
function decodeConfigText(file: string, bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (isUtf8(bytes)) return text;
  const { offset, line, column } = locateInvalidUtf8(bytes, text);
  throw new ConfigError([
    {
      file,
      line,
      column,
      field: '(file)',
      message:
        `invalid UTF-8: byte 0x${bytes[offset].toString(16).padStart(2, '0')} at offset ${offset}; ` +
        'save the file as UTF-8',
    },
  ]);
}

/**
 * Returns the byte offset, line and column of the first invalid UTF-8 sequence in `bytes`.
 * `text` is `bytes` decoded with replacement characters. The walk counts the bytes of each
 * character until a U+FFFD that the bytes do not spell as EF BF BD.
 */
function locateInvalidUtf8(
  bytes: Buffer,
  text: string,
): { offset: number; line: number; column: number } {
  let offset = 0;
  let line = 1;
  let column = 1;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    const spelled =
      bytes[offset] === 0xef && bytes[offset + 1] === 0xbf && bytes[offset + 2] === 0xbd;
    if (code === 0xfffd && !spelled) break;
    offset += Buffer.byteLength(char);
    if (char === '\n') {
      line++;
      column = 1;
    } else {
      column++;
    }
  }
  return { offset, line, column };
}
