/**
 * Returns the offset (in UTF-16 code units) of the first character at which `text` stops being
 * strict JSON (RFC 8259), or undefined when the whole text is valid JSON. When the text ends
 * too early, as in an empty file or an unclosed list, the offset is just after its last
 * character that is not whitespace.
 *
 * JSON.parse finds the same errors, but Node.js 20 (seen on 20.20) leaves the position out of
 * its "Unexpected token" messages, and message text is no stable interface. The scan uses a
 * stack instead of recursion, so deep nesting cannot overflow the call stack.
 */
export function findJsonSyntaxError(text: string): number | undefined {
  try {
    scanJson(text);
    return undefined;
  } catch (error) {
    if (error instanceof JsonSyntaxError) return error.offset;
    throw error;
  }
}

class JsonSyntaxError extends Error {
  readonly offset: number;

  constructor(offset: number) {
    super(`invalid JSON at offset ${offset}`);
    this.offset = offset;
  }
}

/** The token the scanner expects at the next character that is not whitespace. */
type Expected =
  /** A value. */
  | 'value'
  /** A value or `]`, just after `[`. */
  | 'value-or-end'
  /** A property name, after `,` in an object. */
  | 'name'
  /** A property name or `}`, just after `{`. */
  | 'name-or-end'
  /** `,` or the end of the enclosing list or object, or the end of the text at the top level. */
  | 'after-value';

/**
 * Returns the first key that a JSON object of `text` repeats, with the offset of its second
 * occurrence, or undefined when no object repeats a key. JSON.parse keeps the last value of a
 * repeated key without an error, where YAML reports it. `text` must be valid JSON.
 */
export function findDuplicateJsonKey(text: string): { offset: number; key: string } | undefined {
  try {
    scanJson(text, true);
    return undefined;
  } catch (error) {
    if (error instanceof JsonDuplicateKey) return { offset: error.offset, key: error.key };
    throw error;
  }
}

class JsonDuplicateKey extends Error {
  readonly offset: number;
  readonly key: string;

  constructor(offset: number, key: string) {
    super(`duplicate JSON key ${JSON.stringify(key)} at offset ${offset}`);
    this.offset = offset;
    this.key = key;
  }
}

/**
 * Scans `text` and throws a JsonSyntaxError at the first error. With `checkKeys`, it also
 * throws a JsonDuplicateKey at the first key that its object already has.
 */
function scanJson(text: string, checkKeys = false): void {
  // An open list is '['; an open object is '{', or the set of its keys with `checkKeys`.
  const containers: ('[' | '{' | Set<string>)[] = [];
  let expected: Expected = 'value';
  let offset = skipWhitespace(text, 0);

  for (;;) {
    const char = text[offset];
    if (expected === 'after-value') {
      const open = containers.at(-1);
      if (open === undefined) {
        if (offset < text.length) throw new JsonSyntaxError(offset);
        return;
      }
      requireMore(text, offset);
      if (char === ',') {
        expected = open === '[' ? 'value' : 'name';
      } else if (char === (open === '[' ? ']' : '}')) {
        containers.pop();
      } else {
        throw new JsonSyntaxError(offset);
      }
      offset = skipWhitespace(text, offset + 1);
      continue;
    }

    requireMore(text, offset);
    if (expected === 'name' || expected === 'name-or-end') {
      if (expected === 'name-or-end' && char === '}') {
        containers.pop();
        expected = 'after-value';
        offset = skipWhitespace(text, offset + 1);
        continue;
      }
      if (char !== '"') throw new JsonSyntaxError(offset);
      const end = scanString(text, offset);
      const keys = containers.at(-1);
      if (keys instanceof Set) {
        const key = JSON.parse(text.slice(offset, end)) as string;
        if (keys.has(key)) throw new JsonDuplicateKey(offset, key);
        keys.add(key);
      }
      offset = skipWhitespace(text, end);
      requireMore(text, offset);
      if (text[offset] !== ':') throw new JsonSyntaxError(offset);
      expected = 'value';
      offset = skipWhitespace(text, offset + 1);
      continue;
    }

    if (expected === 'value-or-end' && char === ']') {
      containers.pop();
      expected = 'after-value';
      offset = skipWhitespace(text, offset + 1);
      continue;
    }
    if (char === '[' || char === '{') {
      containers.push(char === '{' && checkKeys ? new Set<string>() : char);
      expected = char === '[' ? 'value-or-end' : 'name-or-end';
      offset = skipWhitespace(text, offset + 1);
      continue;
    }
    offset = skipWhitespace(text, scanScalar(text, offset));
    expected = 'after-value';
  }
}

/** Throws at the end of the text when it ends where more JSON is needed. */
function requireMore(text: string, offset: number): void {
  if (offset >= text.length) throw new JsonSyntaxError(text.trimEnd().length);
}

/** Returns the offset of the first character at or after `offset` that is not JSON whitespace. */
function skipWhitespace(text: string, offset: number): number {
  let index = offset;
  while (index < text.length && ' \t\n\r'.includes(text[index])) index++;
  return index;
}

/** Scans a string, number, `true`, `false` or `null` and returns the offset after it. */
function scanScalar(text: string, offset: number): number {
  const char = text[offset];
  if (char === '"') return scanString(text, offset);
  if (char === '-' || isDigit(char)) return scanNumber(text, offset);
  for (const literal of ['true', 'false', 'null']) {
    if (char !== literal[0]) continue;
    for (let index = 1; index < literal.length; index++) {
      requireMore(text, offset + index);
      if (text[offset + index] !== literal[index]) throw new JsonSyntaxError(offset + index);
    }
    return offset + literal.length;
  }
  throw new JsonSyntaxError(offset);
}

/** Scans the string that starts with the `"` at `offset` and returns the offset after it. */
function scanString(text: string, offset: number): number {
  let index = offset + 1;
  for (;;) {
    requireMore(text, index);
    const code = text.charCodeAt(index);
    if (code === 0x22) return index + 1; // "
    // RFC 8259 requires control characters, line breaks included, to be escaped.
    if (code < 0x20) throw new JsonSyntaxError(index);
    if (code !== 0x5c) {
      index++;
      continue;
    }
    // After a backslash, RFC 8259 allows \" \\ \/ \b \f \n \r \t, or \u and four hex digits.
    requireMore(text, index + 1);
    const escape = text[index + 1];
    if ('"\\/bfnrt'.includes(escape)) {
      index += 2;
      continue;
    }
    if (escape !== 'u') throw new JsonSyntaxError(index);
    for (let digit = index + 2; digit < index + 6; digit++) {
      requireMore(text, digit);
      if (!/[0-9A-Fa-f]/.test(text[digit])) throw new JsonSyntaxError(digit);
    }
    index += 6;
  }
}

/**
 * Scans a number, `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, and returns the offset
 * after it.
 */
function scanNumber(text: string, offset: number): number {
  let index = offset;
  if (text[index] === '-') index++;
  if (text[index] === '0') {
    index++;
  } else {
    index = scanDigits(text, index);
  }
  if (text[index] === '.') index = scanDigits(text, index + 1);
  if (text[index] === 'e' || text[index] === 'E') {
    index++;
    if (text[index] === '+' || text[index] === '-') index++;
    index = scanDigits(text, index);
  }
  return index;
}

/** Scans one or more digits at `offset` and returns the offset after them. */
function scanDigits(text: string, offset: number): number {
  requireMore(text, offset);
  if (!isDigit(text[offset])) throw new JsonSyntaxError(offset);
  let index = offset + 1;
  while (isDigit(text[index])) index++;
  return index;
}

function isDigit(char: string | undefined): boolean {
  return char !== undefined && char >= '0' && char <= '9';
}
