import { stringify } from 'yaml';

import { formatConfigIssue, type ConfigError, type ConfigIssue } from '../common/errors.js';
import { API_VERSION } from '../config/schema.js';
import type { UnreadableKey } from '../proto/gen/loom/v1/admin.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';

/** Writes a line to standard output. */
export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Writes a line to standard error. */
export function err(line = ''): void {
  process.stderr.write(`${line}\n`);
}

/** Formats a count with a noun, adding "s" unless the count is 1: `1 route`, `3 routes`. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** Warnings of one kind printed in full; the rest are counted in one line per kind. */
const MAX_WARNINGS_PER_KIND = 10;

/**
 * Prints warnings about the configuration to standard error, one per line, in the given order.
 * Of each kind (`ConfigIssue.summary`, or else the field and resource kind) the first
 * `MAX_WARNINGS_PER_KIND` are printed. One line per kind then counts the rest.
 */
export function printWarnings(warnings: readonly ConfigIssue[]): void {
  const counts = new Map<string, number>();
  for (const warning of warnings) {
    const field = warning.field.replace(/\[\d+\]/g, '[]');
    const owner = warning.kind === undefined ? '' : ` of ${warning.kind}s`;
    const summary = warning.summary ?? `warnings about the field ${field}${owner}`;
    const count = (counts.get(summary) ?? 0) + 1;
    counts.set(summary, count);
    if (count <= MAX_WARNINGS_PER_KIND) err(`warning: ${formatConfigIssue(warning)}`);
  }
  for (const [summary, count] of counts) {
    if (count > MAX_WARNINGS_PER_KIND) {
      err(`warning: ... and ${count - MAX_WARNINGS_PER_KIND} more ${summary}`);
    }
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

/** Formats a value as YAML or indented JSON, ending with a newline. */
export function formatDocument(value: unknown, format: 'yaml' | 'json'): string {
  return format === 'json' ? `${JSON.stringify(value, null, 2)}\n` : stringify(value);
}

/** Formats rows as an aligned table with a header row; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
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
