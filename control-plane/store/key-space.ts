import { LoomError } from '../../common/errors.js';
import type { CommitOptions, StoreOperation } from './store.js';

/**
 * Path segment reserved for the stores' own bookkeeping keys. A key with this
 * segment below the store root is never returned by `range` or `watch` and
 * cannot be written by callers.
 */
export const META_SEGMENT = '__meta';

/**
 * Returns true when `key` is a bookkeeping key of a store whose keys live under
 * `root`: its part after `root` starts with, or contains, the `__meta/` segment.
 */
export function isMetaKey(key: string, root: string): boolean {
  if (!key.startsWith(root)) {
    return false;
  }
  const rest = key.slice(root.length);
  return rest.startsWith(`${META_SEGMENT}/`) || rest.includes(`/${META_SEGMENT}/`);
}

/**
 * Returns the prefixes of `key` that end with `/` and are at least as long as
 * `root`, shortest first, including `root` itself when it ends with `/`. A
 * conditional commit with `prefix` P checks the last write to any key whose
 * directory prefixes contain P.
 */
export function directoryPrefixes(key: string, root: string): string[] {
  const prefixes: string[] = [];
  for (let index = key.indexOf('/'); index !== -1; index = key.indexOf('/', index + 1)) {
    if (index + 1 >= root.length) {
      prefixes.push(key.slice(0, index + 1));
    }
  }
  return prefixes;
}

/** A commit request after validation. */
export interface CheckedCommit {
  /** Undefined for an unconditional commit. */
  ifRevision?: number;
  /** Prefix the `ifRevision` check covers; undefined means every key under the root. */
  checkPrefix?: string;
}

/**
 * Validates a commit request against the rules both stores share, so that they
 * reject the same requests. A valid commit has at least one operation and
 * string keys under `root` without a `__meta` segment. No key appears twice,
 * because etcd rejects such a transaction. `ifRevision` is a non-negative
 * integer, and `prefix` ends with `/` and starts with `root`.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the offending value.
 */
export function validateCommit(
  operations: StoreOperation[],
  options: CommitOptions | undefined,
  root: string,
): CheckedCommit {
  if (!Array.isArray(operations) || operations.length === 0) {
    throw invalid('commit needs at least one operation');
  }

  const seen = new Set<string>();
  for (const operation of operations) {
    validateOperation(operation, root);
    if (seen.has(operation.key)) {
      throw invalid(`key ${JSON.stringify(operation.key)} appears twice in one commit`);
    }
    seen.add(operation.key);
  }

  return validateCommitOptions(options, root);
}

/**
 * Validates the start revision of a watch.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` unless `fromRevision` is a positive integer.
 */
export function validateWatchStart(fromRevision: number): void {
  if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) {
    throw invalid(`watch start revision must be a positive integer (got ${fromRevision})`);
  }
}

function validateOperation(operation: StoreOperation, root: string): void {
  if (operation.type !== 'put' && operation.type !== 'delete') {
    throw invalid(`operation type must be "put" or "delete" (got ${JSON.stringify(operation)})`);
  }
  if (typeof operation.key !== 'string' || operation.key === '') {
    throw invalid(`operation key must be a non-empty string (got ${JSON.stringify(operation)})`);
  }
  if (operation.type === 'put' && typeof operation.value !== 'string') {
    throw invalid(`value of key ${JSON.stringify(operation.key)} must be a string`);
  }
  if (!operation.key.startsWith(root)) {
    throw invalid(`key ${JSON.stringify(operation.key)} is outside the store prefix "${root}"`);
  }
  if (isMetaKey(operation.key, root)) {
    throw invalid(
      `key ${JSON.stringify(operation.key)} uses the reserved segment "${META_SEGMENT}"`,
    );
  }
}

function validateCommitOptions(options: CommitOptions | undefined, root: string): CheckedCommit {
  if (options?.ifRevision === undefined) {
    return {};
  }

  const { ifRevision, prefix } = options;
  if (!Number.isSafeInteger(ifRevision) || ifRevision < 0) {
    throw invalid(`ifRevision must be a non-negative integer (got ${ifRevision})`);
  }
  if (prefix === undefined) {
    return { ifRevision };
  }
  if (!prefix.endsWith('/') || !prefix.startsWith(root)) {
    throw invalid(
      `commit prefix must end with "/" and start with the store prefix "${root}" ` +
        `(got ${JSON.stringify(prefix)})`,
    );
  }
  return { ifRevision, checkPrefix: prefix };
}

function invalid(message: string): LoomError {
  return new LoomError('LOOM_INVALID_ARGUMENT', message);
}
