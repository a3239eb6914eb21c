import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Node } from 'yaml';

import { ConfigError, type ConfigIssue } from '../common/errors.js';
import type { ConfigSource } from '../config/load.js';

/** A route or upstream as it appears in one config file. */
interface Declaration {
  file: string;
  lines: LineCounter;
  node: Node;
}

/**
 * Adds file and line to the issues that the control plane found, for the resources that
 * `sources` declare, and words the upstream list of an unknown upstream for a check that saw
 * both the files and the store. Returns other errors unchanged. `sources` are the texts the
 * offline checks read (`DeclaredConfig.sources`), so standard input gets lines too and a file
 * changed since is not read again.
 */
export function locateControlPlaneIssues(
  error: unknown,
  sources: readonly ConfigSource[],
): unknown {
  if (!(error instanceof ConfigError)) return error;
  if (error.issues.every((issue) => issue.file !== undefined)) return error;

  const declarations = findDeclarations(sources);
  return new ConfigError(
    error.issues.map((issue) => (issue.file === undefined ? locate(issue, declarations) : issue)),
    error.warnings,
  );
}

function locate(issue: ConfigIssue, declarations: Map<string, Declaration>): ConfigIssue {
  const located = { ...issue, message: rewordUpstreamList(issue) };
  const declaration = issue.kind && declarations.get(`${issue.kind}/${issue.name ?? ''}`);
  if (!declaration) return located;

  const offset = fieldOffset(declaration.node, fieldPath(issue.field));
  return { ...located, file: declaration.file, line: declaration.lines.linePos(offset).line };
}

/**
 * Rewords the upstream list of an unknown upstream. The control plane validates the files
 * merged with the store, so "declared upstreams" would send the reader to the files alone.
 */
function rewordUpstreamList(issue: ConfigIssue): string {
  if (issue.kind !== 'route' || issue.field !== 'upstream') return issue.message;
  return issue.message
    .replace('declared upstreams: ', 'upstreams in the files or the store: ')
    .replace('no upstream is declared', 'neither the files nor the store declare an upstream');
}

/** Splits `targets[0].url` into `['targets', 0, 'url']`. */
function fieldPath(field: string): (string | number)[] {
  return [...field.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((match) =>
    match[2] === undefined ? match[1] : Number(match[2]),
  );
}

/** Returns the offset of the deepest part of `path` in `node`: a key for a field, else the value. */
function fieldOffset(node: Node, path: (string | number)[]): number {
  let current = node;
  let offset = node.range?.[0] ?? 0;
  for (const part of path) {
    if (isMap(current)) {
      const pair = current.items.find((item) => isScalar(item.key) && item.key.value === part);
      if (!pair || !isScalar(pair.key)) break;
      offset = pair.key.range?.[0] ?? offset;
      current = pair.value as Node;
    } else if (isSeq(current) && typeof part === 'number' && current.items[part]) {
      current = current.items[part] as Node;
      offset = current.range?.[0] ?? offset;
    } else {
      break;
    }
  }
  return offset;
}

/** Maps `route/NAME` and `upstream/NAME` to where the files declare them; the first file wins. */
function findDeclarations(sources: readonly ConfigSource[]): Map<string, Declaration> {
  const declarations = new Map<string, Declaration>();
  for (const { file, text } of sources) {
    const lines = new LineCounter();
    for (const document of parseAllDocuments(text, { lineCounter: lines })) {
      if (!('contents' in document) || !isMap(document.contents)) continue;
      for (const [list, kind] of [
        ['routes', 'route'],
        ['upstreams', 'upstream'],
      ] as const) {
        const items = document.contents.get(list, true);
        if (!isSeq(items)) continue;
        for (const item of items.items) {
          const name = isMap(item) ? item.get('name') : undefined;
          const key = `${kind}/${String(name)}`;
          if (typeof name === 'string' && !declarations.has(key)) {
            declarations.set(key, { file, lines, node: item as Node });
          }
        }
      }
    }
  }
  return declarations;
}
