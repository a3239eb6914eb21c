import type { Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';

import { ConfigError } from '../common/errors.js';

/**
 * Maximum size of one config file, standard input or pipe, in bytes. Parsing takes far more
 * memory than the text. On a 2-core Linux machine with Node.js 20, `loomctl validate` of
 * 100,000 routes (8.6 MB of YAML) peaked at 1.6 GB and of 300,000 (26 MB) at 2.9 GB. The
 * default heap limit there is 4.3 GB, and a 52 MB file ended loomctl with an out-of-memory
 * crash. A pipe may never end. So the read stops here with an error instead, and several files
 * together are held to the same limit (see `loadConfigFiles`).
 */
export const MAX_CONFIG_BYTES = 32 * 1024 * 1024;

/** Size of each read from a file or standard input, in bytes. */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Reads a config file as UTF-8, also when it is a pipe that never ends. A character or block
 * device, such as `/dev/zero` or `/dev/sda`, is rejected before any read, because none holds a
 * config file and an endless one would be read up to the size limit.
 * @throws ConfigError when the file is a device, is larger than `MAX_CONFIG_BYTES`, contains a
 *   NUL byte or is not valid UTF-8.
 */
export async function readConfigFile(file: string): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const stats = await handle.stat();
    if (stats.isCharacterDevice() || stats.isBlockDevice()) throw notAFile(file, stats);
    const reader = new ConfigReader(file, stats.isFIFO() ? 'pipe' : 'file');
    for (;;) {
      const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await handle.read(chunk, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) break;
      reader.add(chunk.subarray(0, bytesRead));
    }
    return reader.text();
  } finally {
    await handle.close();
  }
}

/**
 * Reads a stream, such as standard input, to its end, as `readConfigFile` reads a pipe. The
 * read stops at the first NUL byte or invalid UTF-8, or past `MAX_CONFIG_BYTES`.
 */
export async function readConfigStream(
  name: string,
  stream: AsyncIterable<Buffer | string>,
): Promise<string> {
  const reader = new ConfigReader(name, 'pipe');
  for await (const chunk of stream) {
    reader.add(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return reader.text();
}

/**
 * The bytes of a config read so far. Each chunk is checked as it arrives for a NUL byte,
 * invalid UTF-8 and the size limit. Input that cannot be a config then ends the read at that
 * chunk, also when the stream would never end.
 */
class ConfigReader {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(
    private readonly file: string,
    private readonly source: 'file' | 'pipe',
  ) {}

  /** Adds a chunk, or throws the ConfigError that the input has. */
  add(chunk: Buffer): void {
    this.#size += chunk.length;
    if (this.#size > MAX_CONFIG_BYTES) throw tooLarge(this.file, this.source);
    this.#chunks.push(chunk);

    const nul = chunk.indexOf(0);
    if (nul !== -1) throw nulByte(this.file, this.#bytes(), this.#size - chunk.length + nul);
    try {
      this.#decoder.decode(chunk, { stream: true });
    } catch {
      // Throws the error with the line and column of the first invalid byte.
      decodeConfigText(this.file, this.#bytes());
    }
  }

  /** Returns the text read, or throws when it ends inside a UTF-8 sequence. */
  text(): string {
    return decodeConfigText(this.file, this.#bytes());
  }

  #bytes(): Buffer {
    return Buffer.concat(this.#chunks, this.#size);
  }
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

function tooLarge(file: string, source: 'file' | 'pipe'): ConfigError {
  const input =
    source === 'file' ? 'that it names a config file' : 'that the input is a config file';
  return new ConfigError([
    {
      file,
      field: '(file)',
      message:
        `cannot read config: larger than ${MAX_CONFIG_BYTES / 1024 / 1024} MiB, more than ` +
        `loomctl can parse in its memory (about 350,000 short routes); check ${input}`,
    },
  ]);
}

/** Returns the error of a NUL byte at `offset`, which YAML and JSON text never contains. */
function nulByte(file: string, bytes: Buffer, offset: number): ConfigError {
  const before = bytes.subarray(0, offset).toString('utf8');
  const lineStart = before.lastIndexOf('\n') + 1;
  return new ConfigError([
    {
      file,
      line: before.split('\n').length,
      column: [...before.slice(lineStart)].length + 1,
      field: '(file)',
      message:
        `cannot read config: NUL byte (0x00) at offset ${offset}, which YAML and JSON text ` +
        'never contains, so the input is not a config file; pass a YAML or JSON file',
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
