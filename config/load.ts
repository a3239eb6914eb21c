import { readFile } from 'node:fs/promises';

import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

import { ConfigError, type ConfigIssue } from '../common/errors.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';
import { normalizeHostPattern, normalizeRoute, normalizeUpstream } from './normalize.js';
import { ConfigFileSchema } from './schema.js';
import { findConfigWarnings, validateConfig, type ConfigPath, type Locator } from './validate.js';

/** A declared configuration in stored (normalised) form. */
export interface DeclaredConfig {
  routes: Route[];
  upstreams: Upstream[];
  /** Problems that do not stop an apply, such as routes that can never match. */
  warnings: ConfigIssue[];
}

/**
 * One config file. JSON text is read with JSON.parse, which is many times
 * faster than the YAML parser on a file of 100,000 routes; the YAML document,
 * which maps values to lines, is built only when an issue needs a line.
 */
class ParsedFile {
  readonly file: string;
  readonly text: string;
  data: unknown;
  #yaml: { document: Document; lines: LineCounter } | undefined;

  constructor(file: string, text: string, data?: unknown) {
    this.file = file;
    this.text = text;
    this.data = data;
  }

  get document(): Document {
    return this.yaml().document;
  }

  get lines(): LineCounter {
    return this.yaml().lines;
  }

  yaml(): { document: Document; lines: LineCounter } {
    if (!this.#yaml) {
      const lines = new LineCounter();
      const document = parseDocument(this.text, { lineCounter: lines, prettyErrors: false });
      this.#yaml = { document, lines };
    }
    return this.#yaml;
  }
}

/**
 * Reads, checks and normalises config files (YAML or JSON; JSON is YAML).
 * Throws a ConfigError listing every problem with its file and line. The
 * resources of all files are merged and validated together.
 */
export async function loadConfigFiles(
  files: string[],
  options: LoadOptions = {},
): Promise<DeclaredConfig> {
  const texts = await Promise.all(files.map((file) => readConfigText(file)));
  return parseConfigTexts(
    files.map((file, index) => ({ file, text: texts[index] })),
    options,
  );
}

/** Settings of `loadConfigFiles` and `parseConfigTexts`. */
export interface LoadOptions {
  /**
   * The files may be part of a larger configuration: a route may name an
   * upstream they do not declare, which becomes a warning instead of an error
   * because the store may hold it. Off when the files must be complete (--prune).
   */
  partial?: boolean;
}

async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(error);
    throw new ConfigError([{ file, field: '(file)', message: `cannot read config: ${reason}` }]);
  }
}

/** Parses config texts already in memory; `file` names each one in errors. */
export function parseConfigTexts(
  sources: { file: string; text: string }[],
  options: LoadOptions = {},
): DeclaredConfig {
  const issues: ConfigIssue[] = [];
  const routes: Route[] = [];
  const upstreams: Upstream[] = [];
  // Normalised values with lists in file order, so that an issue's index names the
  // element the file has at that index.
  const checkedRoutes: Route[] = [];
  const checkedUpstreams: Upstream[] = [];
  // Each resource remembers where it came from so that later checks can name the line.
  const origins: {
    route: ParsedFile[];
    upstream: ParsedFile[];
    routeIndex: number[];
    upstreamIndex: number[];
  } = { route: [], upstream: [], routeIndex: [], upstreamIndex: [] };

  for (const source of sources) {
    const parsed = parseOne(source.file, source.text, issues);
    if (!parsed) continue;

    const result = ConfigFileSchema.safeParse(parsed.data ?? {});
    if (!result.success) {
      for (const zodIssue of result.error.issues) {
        issues.push(issueFromSchema(parsed, zodIssue.path as ConfigPath, zodIssue.message));
      }
      continue;
    }
    result.data.routes.forEach((route, index) => {
      routes.push(normalizeRoute(route));
      checkedRoutes.push(inFileOrder(route));
      origins.route.push(parsed);
      origins.routeIndex.push(index);
    });
    result.data.upstreams.forEach((upstream, index) => {
      upstreams.push(normalizeUpstream(upstream));
      checkedUpstreams.push({
        ...normalizeUpstream(upstream),
        targets: upstream.targets.map((target) => ({ url: target.url, weight: target.weight })),
      });
      origins.upstream.push(parsed);
      origins.upstreamIndex.push(index);
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const locate: Locator = (path) => {
    const [list, index, ...rest] = path;
    const isRoute = list === 'routes';
    const parsed = (isRoute ? origins.route : origins.upstream)[index as number];
    const localIndex = (isRoute ? origins.routeIndex : origins.upstreamIndex)[index as number];
    if (!parsed) return {};
    return { file: parsed.file, line: lineOf(parsed, [list, localIndex, ...rest]) };
  };
  const semantic = validateConfig(checkedRoutes, checkedUpstreams, locate, {
    allowUndeclaredUpstreams: options.partial,
  });
  if (semantic.length > 0) throw new ConfigError(semantic);
  const warnings = findConfigWarnings(checkedRoutes, locate);
  if (options.partial)
    warnings.push(...undeclaredUpstreamWarnings(checkedRoutes, checkedUpstreams, locate));
  return { routes, upstreams, warnings };
}

function undeclaredUpstreamWarnings(
  routes: Route[],
  upstreams: Upstream[],
  locate: Locator,
): ConfigIssue[] {
  const declared = new Set(upstreams.map((upstream) => upstream.name));
  const warnings: ConfigIssue[] = [];
  routes.forEach((route, index) => {
    if (declared.has(route.upstream)) return;
    warnings.push({
      ...locate(['routes', index, 'upstream']),
      kind: 'route',
      name: route.name,
      field: 'upstream',
      value: route.upstream,
      message:
        'upstream is not declared in these files; the apply succeeds only if the store already has it',
    });
  });
  return warnings;
}

/** Normalises a route but keeps hosts, paths and methods in the order the file lists them. */
function inFileOrder(route: Route): Route {
  return {
    ...normalizeRoute(route),
    hosts: route.hosts.map(normalizeHostPattern),
    paths: [...route.paths],
    methods: route.methods.map((method) => method.toUpperCase()),
  };
}

function parseOne(file: string, text: string, issues: ConfigIssue[]): ParsedFile | undefined {
  if (text.trimStart().startsWith('{')) {
    try {
      return new ParsedFile(file, text, JSON.parse(text));
    } catch {
      // Not strict JSON (comments, trailing commas): the YAML parser reports where.
    }
  }
  const parsed = new ParsedFile(file, text);
  const { document, lines } = parsed.yaml();
  if (document.errors.length === 0) {
    parsed.data = document.toJS() ?? {};
    return parsed;
  }

  for (const error of document.errors) {
    const line = lines.linePos(error.pos[0]).line;
    issues.push({
      file,
      line,
      field: '(syntax)',
      message: `invalid YAML or JSON: ${error.message}`,
    });
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
    .map((part, index) =>
      typeof part === 'number' ? `[${part}]` : index === 0 ? part : `.${part}`,
    )
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
