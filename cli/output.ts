import { Document, visit } from 'yaml';

import { formatConfigIssue, type ConfigError, type ConfigIssue } from '../common/errors.js';
import { API_VERSION } from '../config/schema.js';
import type { UnreadableKey } from '../proto/gen/loom/v1/admin.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';

/** Writes a line to standard output, with terminal control characters escaped. */
export function out(line = ''): void {
  process.stdout.write(`${escapeTerminalControls(line)}\n`);
}

/** Writes a line to standard error, with terminal control characters escaped. */
export function err(line = ''): void {
  process.stderr.write(`${escapeTerminalControls(line)}\n`);
}

/**
 * Invisible and bidirectional formatting characters, as the body of a character class. They
 * are the soft hyphen, Arabic letter mark and Mongolian vowel separator. Then come the
 * zero-width space, non-joiner and joiner, the left-to-right and right-to-left marks, line and
 * paragraph separators, the bidirectional
 * embeddings and overrides (U+202A to U+202E), word joiner, invisible operators, the
 * bidirectional isolates (U+2066 to U+2069), deprecated format characters, byte order mark,
 * interlinear annotation characters and tag characters. They show nothing themselves but
 * change how the text around them reads, so an address or error could pass for another value.
 */
const INVISIBLE =
  '\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb\\u{e0000}-\\u{e007f}';

/** C0 control characters except tab and line feed, DEL, C1 control characters, and `INVISIBLE`. */
const TERMINAL_CONTROL = new RegExp(
  `[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f${INVISIBLE}]`,
  'gu',
);

/** The characters of `TERMINAL_CONTROL` plus tab and line feed, which would break a table row. */
const CELL_CONTROL = new RegExp(`[\\u0000-\\u001f\\u007f-\\u009f${INVISIBLE}]`, 'gu');

/**
 * Returns the escape of a character: `\n`, `\t`, `\r` or `\uXXXX`, and for a character above
 * U+FFFF one `\uXXXX` per UTF-16 code unit, so the escape is valid in JSON and JavaScript alike.
 */
function escapeControl(char: string): string {
  if (char === '\n') return '\\n';
  if (char === '\t') return '\\t';
  if (char === '\r') return '\\r';
  let escaped = '';
  for (let i = 0; i < char.length; i++) {
    escaped += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
  }
  return escaped;
}

/**
 * Returns text with each control character other than tab and line feed, and each invisible or
 * bidirectional formatting character, written as an escape such as `\u001b` or `\u202e`.
 * Errors and status values come from the control plane and from proxies, and an escape
 * sequence in them could otherwise recolour, retitle or clear the operator's terminal, and a
 * bidirectional override could make them read as other text.
 */
export function escapeTerminalControls(text: string): string {
  return text.replace(TERMINAL_CONTROL, escapeControl);
}

/** Formats a count with a noun, adding "s" unless the count is 1: `1 route`, `3 routes`. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/**
 * Maximum number of warnings, and of errors found offline, printed in full per kind. One line
 * per kind counts the rest, so a file with thousands of broken routes prints a short list.
 */
const MAX_ISSUES_PER_KIND = 10;

/**
 * Prints warnings about the configuration to standard error, one per line, in the given order.
 * Of each kind (`ConfigIssue.summary`, or else the field and resource kind) the first
 * `MAX_ISSUES_PER_KIND` are printed. One line per kind then counts the rest.
 */
export function printWarnings(warnings: readonly ConfigIssue[]): void {
  printByKind(
    warnings,
    (field, owner) => `warnings about the field ${field}${owner}`,
    (line) => err(`warning: ${line}`),
  );
}

/**
 * Prints the first `MAX_ISSUES_PER_KIND` issues of each kind with `print`, in the given order,
 * and then one `... and N more KIND` line per kind that had more. The kind is
 * `ConfigIssue.summary`, or else what `describeKind` returns for the field without list
 * indexes (`hosts[]`) and the resource kind (` of routes`, or empty).
 */
function printByKind(
  issues: readonly ConfigIssue[],
  describeKind: (field: string, owner: string) => string,
  print: (line: string) => void,
): void {
  const counts = new Map<string, number>();
  for (const issue of issues) {
    const field = issue.field.replace(/\[\d+\]/g, '[]');
    const owner = issue.kind === undefined ? '' : ` of ${issue.kind}s`;
    const kind = issue.summary ?? describeKind(field, owner);
    const count = (counts.get(kind) ?? 0) + 1;
    counts.set(kind, count);
    if (count <= MAX_ISSUES_PER_KIND) print(formatConfigIssue(issue));
  }
  for (const [kind, count] of counts) {
    if (count > MAX_ISSUES_PER_KIND) print(`... and ${count - MAX_ISSUES_PER_KIND} more ${kind}`);
  }
}

/**
 * Prints a warning per stored key that the control plane could not read, naming the key, why,
 * and the commands that replace or remove it. `total` counts keys the list leaves out.
 */
export function printUnreadableKeys(unreadable: readonly UnreadableKey[], total: number): void {
  for (const { kind, name, key, reason } of unreadable) {
    err(
      `warning: stored key ${JSON.stringify(key)} is not a valid ${kind} (${reason}), so proxies ` +
        `skip it; replace it by applying a ${kind} named ${JSON.stringify(name)}, or remove it ` +
        `with: loomctl delete ${kind} ${name}`,
    );
  }
  const unlisted = total - unreadable.length;
  if (unlisted > 0) {
    err(
      `warning: ${plural(unlisted, 'more unreadable key')} not listed; ` +
        '"loomctl apply --prune" removes every unreadable key that the files do not declare',
    );
  }
}

/** Returns whether `unreadable` lists the key of `kind` and `name`. */
export function isUnreadable(
  unreadable: readonly UnreadableKey[],
  kind: string,
  name: string,
): boolean {
  return unreadable.some((key) => key.kind === kind && key.name === name);
}

/** Prints `error: HEADER:` and then one indented line per configuration problem, to standard error. */
export function printConfigIssues(header: string, issues: readonly ConfigIssue[]): void {
  err(`error: ${header}:`);
  for (const issue of issues) err(`  ${formatConfigIssue(issue)}`);
}

/**
 * Prints `error: HEADER:` and the problems that loomctl found in the files, to standard error.
 * Like warnings, only the first `MAX_ISSUES_PER_KIND` of each kind are printed, and one line per
 * kind counts the rest. Errors from the control plane go through {@link printConfigIssues}
 * instead, because it already sends at most 100 of them and a count of the rest.
 */
export function printOfflineIssues(header: string, issues: readonly ConfigIssue[]): void {
  err(`error: ${header}:`);
  printByKind(
    issues,
    (field, owner) => `errors in the field ${field}${owner}`,
    (line) => err(`  ${line}`),
  );
}

/** Returns the error header of checks that ran offline and wrote nothing (validate, diff). */
export function offlineHeader(error: ConfigError): string {
  return `invalid configuration: checked offline, found ${plural(error.issues.length, 'error')}`;
}

/**
 * Returns a config document that `loomctl apply -f` accepts again, with
 * optional fields that are not set left out.
 */
export function configDocument(routes: Route[], upstreams: Upstream[]): Record<string, unknown> {
  return withoutUndefined({ apiVersion: API_VERSION, upstreams, routes }) as Record<
    string,
    unknown
  >;
}

/**
 * Formats a value as YAML or indented JSON, ending with a newline. The characters that
 * `escapeTerminalControls` escapes are written as `\uXXXX` escapes inside quoted strings, so
 * the text reaches no terminal raw and still parses to the same value: `loomctl apply -f`
 * stores what `get` printed.
 */
export function formatDocument(value: unknown, format: 'yaml' | 'json'): string {
  // JSON.stringify escapes C0 controls itself, and everything else it leaves raw is inside a
  // string, where a \uXXXX escape means the same character.
  if (format === 'json') return `${escapeTerminalControls(JSON.stringify(value, null, 2))}\n`;

  // Only a double-quoted YAML scalar reads \uXXXX as an escape, so every string with such a
  // character is written double-quoted before its characters are escaped.
  const document = new Document(value);
  visit(document, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && hasTerminalControl(node.value)) {
        node.type = 'QUOTE_DOUBLE';
      }
    },
  });
  return escapeTerminalControls(document.toString());
}

/** Returns whether `text` contains a character that `escapeTerminalControls` escapes. */
function hasTerminalControl(text: string): boolean {
  return text.search(TERMINAL_CONTROL) !== -1;
}

/**
 * Formats rows as an aligned table with a header row; the last column is not padded. Control
 * characters in cells, line breaks and tabs included, are escaped, so each row is one line.
 */
export function formatTable(header: string[], cells: string[][]): string {
  const rows = cells.map((row) => row.map((cell) => cell.replace(CELL_CONTROL, escapeControl)));
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length)),
  );
  const format = (row: string[]) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column])))
      .join('  ');
  return [header, ...rows].map(format).join('\n') + '\n';
}

/** Returns a deep copy without undefined object fields. */
export function withoutUndefined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutUndefined);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, field]) => field !== undefined)
      .map(([key, field]) => [key, withoutUndefined(field)]),
  );
}
