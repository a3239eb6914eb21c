import { readFile } from 'node:fs/promises';

import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

import { ConfigError, type ConfigIssue } from '../common/errors.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';
import { normalizeRoute, normalizeUpstream } from './normalize.js';
import { ConfigFileSchema } from './schema.js';
import { validateConfig, type ConfigPath } from './validate.js';

/** A declared configuration in stored (normalised) form. */
export interface DeclaredConfig {
  routes: Route[];
  upstreams: Upstream[];
}

interface ParsedFile {
  file: string;
  document: Document;
  lines: LineCounter;
}

/**
 * Reads, checks and normalises config files (YAML or JSON; JSON is YAML).
 * Throws a ConfigError listing every problem with its file and line. The
 * resources of all files are merged and validated together.
 */
export async function loadConfigFiles(files: string[]): Promise<DeclaredConfig> {
  const texts = await Promise.all(files.map((file) => readConfigText(file)));
  return parseConfigTexts(files.map((file, index) => ({ file, text: texts[index] })));
}

async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(error);
    throw new ConfigError([{ file, field: '(file)', message: `cannot read config: ${reason}` }]);
  }
}

/** Parses config texts already in memory; `file` names each one in errors. */
export function parseConfigTexts(sources: { file: string; text: string }[]): DeclaredConfig {
  const issues: ConfigIssue[] = [];
  const routes: Route[] = [];
  const upstreams: Upstream[] = [];
  // Each resource remembers where it came from so that later checks can name the line.
  const origins: { route: ParsedFile[]; upstream: ParsedFile[]; routeIndex: number[]; upstreamIndex: number[] } =
    { route: [], upstream: [], routeIndex: [], upstreamIndex: [] };

  for (const source of sources) {
    const parsed = parseOne(source.file, source.text, issues);
    if (!parsed) continue;

    const result = ConfigFileSchema.safeParse(parsed.document.toJS() ?? {});
    if (!result.success) {
      for (const zodIssue of result.error.issues) {
        issues.push(issueFromSchema(parsed, zodIssue.path as ConfigPath, zodIssue.message));
      }
      continue;
    }
    result.data.routes.forEach((route, index) => {
      routes.push(normalizeRoute(route));
      origins.route.push(parsed);
      origins.routeIndex.push(index);
    });
    result.data.upstreams.forEach((upstream, index) => {
      upstreams.push(normalizeUpstream(upstream));
      origins.upstream.push(parsed);
      origins.upstreamIndex.push(index);
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const semantic = validateConfig(routes, upstreams, (path) => {
    const [list, index, ...rest] = path;
    const isRoute = list === 'routes';
    const parsed = (isRoute ? origins.route : origins.upstream)[index as number];
    const localIndex = (isRoute ? origins.routeIndex : origins.upstreamIndex)[index as number];
    if (!parsed) return {};
    return { file: parsed.file, line: lineOf(parsed, [list, localIndex, ...rest]) };
  });
  if (semantic.length > 0) throw new ConfigError(semantic);
  return { routes, upstreams };
}

function parseOne(file: string, text: string, issues: ConfigIssue[]): ParsedFile | undefined {
  const lines = new LineCounter();
  const document = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (document.errors.length === 0) return { file, document, lines };

  for (const error of document.errors) {
    const line = lines.linePos(error.pos[0]).line;
    issues.push({ file, line, field: '(syntax)', message: `invalid YAML or JSON: ${error.message}` });
  }
  return undefined;
}

function issueFromSchema(parsed: ParsedFile, path: ConfigPath, message: string): ConfigIssue {
  const [list, index, ...rest] = path;
  const kind = list === 'routes' ? 'route' : list === 'upstreams' ? 'upstream' : undefined;
  const value = parsed.document.getIn(path);
  let name: string | undefined;
  if (kind && typeof index === 'number') {
    const raw = parsed.document.getIn([list, index, 'name']);
    name = typeof raw === 'string' ? raw : `#${index + 1}`;
  }
  const field = kind ? formatField(rest) || '(resource)' : formatField(path) || '(document)';
  return {
    file: parsed.file,
    line: lineOf(parsed, path),
    kind,
    name,
    field,
    value: isMap(value) || isSeq(value) ? undefined : toPlain(value),
    message,
  };
}

function toPlain(value: unknown): unknown {
  return value && typeof value === 'object' && 'toJSON' in value
    ? (value as { toJSON(): unknown }).toJSON()
    : value;
}

function formatField(path: ConfigPath): string {
  return path
    .map((part, index) => (typeof part === 'number' ? `[${part}]` : index === 0 ? part : `.${part}`))
    .join('');
}

/** Returns the 1-based line of the deepest node along `path` that exists. */
function lineOf(parsed: ParsedFile, path: ConfigPath): number | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = parsed.document.getIn(path.slice(0, depth), true) as Node | undefined;
    const offset = node?.range?.[0];
    if (offset !== undefined) return parsed.lines.linePos(offset).line;
  }
  return undefined;
}
