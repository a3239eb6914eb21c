import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';

import {
  isMap,
  isScalar,
  LineCounter,
  parseAllDocuments,
  parseDocument,
  type Document,
  type Node,
} from 'yaml';

import { ConfigError, type ConfigIssue } from '../common/errors.js';
import { MAX_CONFIG_BYTES, readConfigFile, readConfigStream } from './config-text.js';
import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';
import { normalizeHostPattern, normalizeRoute, normalizeUpstream } from './normalize.js';
import { findDuplicateJsonKey, findJsonSyntaxError } from './json-syntax.js';
import { findTooDeepValue, MAX_NESTING } from './nesting.js';
import { FailedFields, salvage } from './salvage.js';
import { suggestName } from './suggest.js';
import {
  describeSchemaIssues,
  describeSchemaProblem,
  displayName,
  formatField,
  parseWithSchema,
  type SchemaProblem,
} from './schema-issues.js';
import { ConfigFileSchema, type ConfigFile } from './schema.js';
import {
  findConfigWarnings,
  validateConfig,
  type ConfigPath,
  type Locator,
  type WrittenMatch,
} from './validate.js';

/** A declared configuration in stored (normalised) form. */
export interface DeclaredConfig {
  routes: Route[];
  upstreams: Upstream[];
  /** Problems that do not stop an apply, such as routes that can never match. */
  warnings: ConfigIssue[];
  /**
   * The texts read, by the file name that messages use (`(stdin)` for standard input), so
   * that issues found later, by the control plane, can name lines without reading again.
   */
  sources: readonly ConfigSource[];
}

/** The text of one config file and the name that messages give it. */
export interface ConfigSource {
  file: string;
  text: string;
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
  /** Fields that failed the schema, or undefined when the file passed it. */
  failed: FailedFields | undefined;
  #yaml: { document: Document; lines: LineCounter } | undefined;

  constructor(
    file: string,
    text: string,
    data?: unknown,
    yaml?: { document: Document; lines: LineCounter },
  ) {
    this.file = file;
    this.text = text;
    this.data = data;
    this.#yaml = yaml;
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
 * Reads, checks and normalises config files: `.json` files as strict JSON, others as YAML,
 * which JSON text also is.
 * Throws a ConfigError listing every problem with its file and line. The
 * resources of all files are merged and validated together. A directory
 * is read as the `.yaml`, `.yml` and `.json` regular files directly in it, in name
 * order (subdirectories, FIFOs and devices are not read), and a file named twice is read once.
 * A YAML file may hold several documents separated by `---`, each one config.
 * The path `-` reads standard input.
 */
export async function loadConfigFiles(
  paths: string[],
  options: LoadOptions = {},
): Promise<DeclaredConfig> {
  const files = await expandConfigPaths(paths);
  const texts = await Promise.all(files.map((file) => readConfigText(file)));
  checkTotalSize(texts);
  return parseConfigTexts(
    files.map((file, index) => ({
      file: file === STDIN_PATH ? STDIN_NAME : file,
      text: texts[index],
    })),
    options,
  );
}

/**
 * Rejects files that are each within `MAX_CONFIG_BYTES` but larger together, because parsing
 * their merged resources takes as much memory as one file of that size.
 */
function checkTotalSize(texts: string[]): void {
  if (texts.length < 2) return;
  const total = texts.reduce((sum, text) => sum + Buffer.byteLength(text), 0);
  if (total <= MAX_CONFIG_BYTES) return;
  throw new ConfigError([
    {
      file: `(${texts.length} files)`,
      field: '(file)',
      message:
        `cannot read config: the files add up to ${(total / 1024 / 1024).toFixed(1)} MiB, more ` +
        `than the ${MAX_CONFIG_BYTES / 1024 / 1024} MiB loomctl can parse in its memory (about 350,000 short ` +
        'routes); check that each names a config file',
    },
  ]);
}

/** Settings of `loadConfigFiles` and `parseConfigTexts`. */
export interface LoadOptions {
  /**
   * The files may be part of a larger configuration: a route may name an
   * upstream they do not declare, which becomes a warning instead of an error
   * because the store may hold it. Off when the files must be complete (--prune).
   */
  partial?: boolean;
  /** Appended to the message about a route's unknown upstream; see `ValidateOptions`. */
  undeclaredUpstreamHint?: string;
}

/** File name endings read from a directory. */
const CONFIG_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Replaces each directory by its config files and drops repeated files, keeping the first. */
export async function expandConfigPaths(paths: string[]): Promise<string[]> {
  const expanded = await Promise.all(paths.map((path) => listConfigFiles(path)));
  const seen = new Set<string>();
  return expanded.flat().filter((file) => {
    const key = resolve(file);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Returns `[path]` for a file (or a path that cannot be read) and the config files of a directory. */
async function listConfigFiles(path: string): Promise<string[]> {
  if (path === STDIN_PATH) return [path];
  const isDirectory = await stat(path).then(
    (info) => info.isDirectory(),
    () => false, // readConfigText reports the error with the file's name.
  );
  if (!isDirectory) return [path];

  const entries = await readdir(path, { withFileTypes: true }).catch((error: unknown) => {
    const reason =
      (error as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : String(error);
    throw new ConfigError([
      { file: path, field: '(file)', message: `cannot read directory: ${reason}` },
    ]);
  });
  const named = entries
    .filter((entry) => CONFIG_EXTENSIONS.has(extname(entry.name)))
    .map((entry) => join(path, entry.name));
  // Only regular files, also through a symbolic link: a FIFO would block the read until some
  // process writes to it, and a device may never end. A file that stat cannot read stays, so
  // that its read reports why, such as a broken link.
  const regular = await Promise.all(
    named.map((file) =>
      stat(file).then(
        (info) => info.isFile(),
        () => true,
      ),
    ),
  );
  const files = named.filter((_, index) => regular[index]).sort();
  if (files.length === 0) {
    throw new ConfigError([
      {
        file: path,
        field: '(file)',
        message:
          'directory contains no .yaml, .yml or .json files; name a config file or a directory with some',
      },
    ]);
  }
  return files;
}

/** The `-f` value that reads the config from standard input, as kubectl does. */
export const STDIN_PATH = '-';
/** Name of standard input in messages. */
const STDIN_NAME = '(stdin)';

async function readConfigText(file: string): Promise<string> {
  if (file === STDIN_PATH) return readStdin();
  try {
    return await readConfigFile(file);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? `file not found${await suggestOtherExtension(file)}`
        : code === 'EISDIR'
          ? 'is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : String(error);
    throw new ConfigError([{ file, field: '(file)', message: `cannot read config: ${reason}` }]);
  }
}

/**
 * Returns `; did you mean FILE?` naming a config file in the same directory whose name
 * differs from `file` only in its extension (`quickstart.yaml` for `quickstart.yml`), or ''.
 */
async function suggestOtherExtension(file: string): Promise<string> {
  const directory = dirname(file);
  const stem = basename(file, extname(file));
  const entries = await readdir(directory).catch(() => [] as string[]);
  const match = entries
    .filter((entry) => CONFIG_EXTENSIONS.has(extname(entry)) && entry !== basename(file))
    .sort()
    .find((entry) => basename(entry, extname(entry)) === stem);
  return match === undefined ? '' : `; did you mean ${join(directory, match)}?`;
}

/** Parses config texts already in memory; `file` names each one in errors. */
export function parseConfigTexts(
  sources: ConfigSource[],
  options: LoadOptions = {},
): DeclaredConfig {
  const issues: ConfigIssue[] = [];
  const routes: Route[] = [];
  const upstreams: Upstream[] = [];
  // Normalised values with lists in file order, so that an issue's index names the
  // element the file has at that index.
  const checkedRoutes: Route[] = [];
  const checkedUpstreams: Upstream[] = [];
  // Hosts and methods as the file spells them, because the checked ones are normalised.
  const written: WrittenMatch[] = [];
  const writtenRoute = (index: number) => written[index];
  // Each resource remembers where it came from so that later checks can name the line.
  const origins: {
    route: ParsedFile[];
    upstream: ParsedFile[];
    routeIndex: number[];
    upstreamIndex: number[];
  } = { route: [], upstream: [], routeIndex: [], upstreamIndex: [] };
  let anyFailed = false;

  for (const parsed of sources.flatMap((source) => parseOne(source.file, source.text, issues))) {
    const config = checkSchema(parsed, issues);
    anyFailed ||= parsed.failed !== undefined;
    config.routes.forEach((route, index) => {
      const normal = normalizeRoute(route);
      routes.push(normal);
      checkedRoutes.push(inFileOrder(route, normal));
      written.push({ hosts: route.hosts, methods: route.methods });
      origins.route.push(parsed);
      origins.routeIndex.push(index);
    });
    config.upstreams.forEach((upstream, index) => {
      upstreams.push(normalizeUpstream(upstream));
      checkedUpstreams.push({
        ...normalizeUpstream(upstream),
        targets: upstream.targets.map((target) => ({ url: target.url, weight: target.weight })),
      });
      origins.upstream.push(parsed);
      origins.upstreamIndex.push(index);
    });
  }

  // Maps a path in the merged lists to its file and the path in that file.
  const origin = (path: ConfigPath): [ParsedFile | undefined, ConfigPath] => {
    const [list, index, ...rest] = path;
    const isRoute = list === 'routes';
    const parsed = (isRoute ? origins.route : origins.upstream)[index as number];
    const localIndex = (isRoute ? origins.routeIndex : origins.upstreamIndex)[index as number];
    return [parsed, [list, localIndex, ...rest]];
  };
  const locate: Locator = (path) => {
    const [parsed, local] = origin(path);
    if (!parsed) return {};
    return { file: parsed.file, line: lineOf(parsed, local) };
  };
  const schemaFailures = anyFailed
    ? (path: ConfigPath) => {
        const [parsed, local] = origin(path);
        return parsed?.failed?.touches(local) ?? false;
      }
    : undefined;
  issues.push(
    ...validateConfig(checkedRoutes, checkedUpstreams, locate, {
      allowUndeclaredUpstreams: options.partial,
      undeclaredUpstreamHint: options.undeclaredUpstreamHint,
      schemaFailures,
      writtenRoute,
    }),
  );
  const warnings = findConfigWarnings(
    checkedRoutes,
    checkedUpstreams,
    locate,
    schemaFailures,
    writtenRoute,
  );
  if (options.partial) {
    warnings.push(
      ...undeclaredUpstreamWarnings(checkedRoutes, checkedUpstreams, locate, schemaFailures),
    );
  }
  if (issues.length > 0) {
    throw new ConfigError(sortByPlace(issues, sources), sortByPlace(warnings, sources));
  }
  return { routes, upstreams, warnings, sources };
}

/**
 * Checks one file against the schema, adds an issue per problem, and returns
 * the resources as far as they passed. Fields that failed hold placeholders,
 * which `parsed.failed` records, so that the semantic checks still run over
 * every other field and the operator sees all problems in one run.
 */
function checkSchema(parsed: ParsedFile, issues: ConfigIssue[]): ConfigFile {
  const data = withEmptyLists(parsed.data ?? {});
  parsed.data = data;
  const result = parseWithSchema(ConfigFileSchema, data);
  if (result.success) return result.data;

  for (const problem of describeSchemaIssues(result.error.issues, data)) {
    issues.push(issueFromSchema(parsed, problem));
  }
  parsed.failed = FailedFields.fromIssues(result.error.issues);
  const config = salvage(ConfigFileSchema, data, parsed.failed);
  // Messages name a resource whose name failed by what the file has, or by its position.
  for (const list of ['routes', 'upstreams'] as const) {
    config[list].forEach((resource, index) => {
      if (parsed.failed?.touches([list, index, 'name'])) {
        resource.name = displayName(data, list, index);
      }
    });
  }
  return config;
}

/**
 * Returns the document with `routes:` or `upstreams:` written without a value
 * (null in YAML) read as an empty list.
 */
function withEmptyLists(data: unknown): unknown {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return data;
  const record = data as Record<string, unknown>;
  if (record.routes !== null && record.upstreams !== null) return data;
  return {
    ...record,
    ...(record.routes === null ? { routes: [] } : {}),
    ...(record.upstreams === null ? { upstreams: [] } : {}),
  };
}

/** Orders issues by file, then by line. Issues without a line follow, in their own order. */
function sortByPlace(issues: ConfigIssue[], sources: { file: string }[]): ConfigIssue[] {
  const order = new Map(sources.map((source, index) => [source.file, index]));
  const rank = (issue: ConfigIssue) => order.get(issue.file ?? '') ?? sources.length;
  return issues
    .map((issue, index) => ({ issue, index }))
    .sort(
      (a, b) =>
        rank(a.issue) - rank(b.issue) ||
        (a.issue.line ?? Infinity) - (b.issue.line ?? Infinity) ||
        a.index - b.index,
    )
    .map(({ issue }) => issue);
}

function undeclaredUpstreamWarnings(
  routes: Route[],
  upstreams: Upstream[],
  locate: Locator,
  schemaFailures: (path: ConfigPath) => boolean = () => false,
): ConfigIssue[] {
  // As for errors, an upstream without a usable name may be the one a route names.
  if (upstreams.some((_, index) => schemaFailures(['upstreams', index, 'name']))) return [];
  const declared = new Set(upstreams.map((upstream) => upstream.name));
  const warnings: ConfigIssue[] = [];
  routes.forEach((route, index) => {
    if (declared.has(route.upstream) || schemaFailures(['routes', index, 'upstream'])) return;
    warnings.push({
      ...locate(['routes', index, 'upstream']),
      kind: 'route',
      name: route.name,
      field: 'upstream',
      value: route.upstream,
      message:
        'upstream is not declared in these files; the apply succeeds only if the store already has it' +
        suggestionFor(route.upstream, declared),
      summary: 'routes whose upstream is not declared in these files',
    });
  });
  return warnings;
}

function suggestionFor(name: string, declared: Set<string>): string {
  const suggestion = suggestName(name, declared);
  return suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`;
}

/**
 * Returns `normal`, the normalised `route`, with hosts, paths and methods in the order the file
 * lists them.
 */
function inFileOrder(route: Route, normal: Route): Route {
  return {
    ...normal,
    hosts: route.hosts.map(normalizeHostPattern),
    paths: [...route.paths],
    methods: route.methods.map((method) => method.toUpperCase()),
    // As written, so that messages quote them as the file does; the checks normalise them.
    ...(route.stripPrefix === undefined ? {} : { stripPrefix: route.stripPrefix }),
    ...(route.addPrefix === undefined ? {} : { addPrefix: route.addPrefix }),
    ...(route.hostRewrite === undefined ? {} : { hostRewrite: route.hostRewrite }),
    // Header names as written and in file order, so that an issue's index is the file's own.
    requestHeaders: route.requestHeaders,
    responseHeaders: route.responseHeaders,
  };
}

/**
 * YAML error codes that an unquoted `{`, `}`, `[`, `]` or `,` in a value
 * causes, as in `paths: [/users/{id}]`.
 */
const QUOTING_ERRORS = new Set<string>(['MISSING_CHAR', 'UNEXPECTED_TOKEN']);

/**
 * Parses one file into one ParsedFile per document. Empty documents (only
 * comments, or nothing after a final `---`) are skipped. On a syntax error,
 * adds an issue per error with its line and column and returns no documents.
 */
function parseOne(file: string, text: string, issues: ConfigIssue[]): ParsedFile[] {
  if (extname(file).toLowerCase() === '.json') return parseJsonFile(file, text, issues);
  if (text.trimStart().startsWith('{')) {
    const data = parseStrictJson(text);
    // JSON text with a repeated key goes on to the YAML parser, which reports the key.
    if (data !== undefined && findDuplicateJsonKey(text) === undefined) {
      return withinNesting([new ParsedFile(file, text, data.value)], issues);
    }
  }
  const lines = new LineCounter();
  const documents = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
  // A tag that the parser does not know (!!js/function, !!python/object, !custom) would
  // silently leave the plain value, so it is an error like the parser's own.
  const errors = documents.flatMap((document) => [
    ...document.errors,
    ...document.warnings.filter((warning) => warning.code === 'TAG_RESOLVE_FAILED'),
  ]);
  if (errors.length === 0) {
    const parsed: ParsedFile[] = [];
    for (const document of documents) {
      const data = toJavaScript(file, document, issues);
      // An empty document (only comments, or nothing after `---`) declares nothing.
      if (data !== null && data !== undefined) {
        parsed.push(new ParsedFile(file, text, data, { document, lines }));
      }
    }
    return withinNesting(parsed, issues);
  }

  for (const error of errors) {
    const { line, col } = lines.linePos(error.pos[0]);
    const hint = QUOTING_ERRORS.has(error.code)
      ? '; quote a value that contains "{", "}", "[", "]" or ","'
      : error.code === 'TAG_RESOLVE_FAILED'
        ? '; remove the tag, because config values are plain strings, numbers, lists and mappings'
        : '';
    issues.push({
      file,
      line,
      column: col,
      field: '(syntax)',
      message: `invalid YAML or JSON: ${describeYamlError(error.message)}${hint}`,
    });
  }
  return [];
}

/** Returns the value of strict JSON text, or undefined when the text is not strict JSON. */
function parseStrictJson(text: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) };
  } catch {
    // Not strict JSON (comments, trailing commas): the YAML parser reports where.
    return undefined;
  }
}

/**
 * Message of the YAML parser when a document nests so deeply that its recursion overflows the
 * stack; the parser reports it as a syntax error.
 */
const STACK_OVERFLOW = 'Maximum call stack size exceeded';

/** Message of the yaml package's ReferenceError when aliases expand to too many nodes. */
const ALIAS_LIMIT_MESSAGE = 'Excessive alias count indicates a resource exhaustion attack';

/** The fix that messages about nesting suggest. */
const NESTING_HINT = 'config documents nest at most 5 levels, so check the structure of the file';

function describeYamlError(message: string): string {
  if (message !== STACK_OVERFLOW) return message;
  return `lists or mappings nest too deeply to parse; ${NESTING_HINT}`;
}

/**
 * Converts a YAML document to JavaScript values, or adds an issue and returns undefined when
 * its aliases expand to too many nodes (as in a "billion laughs" document) or it nests too
 * deeply for the conversion.
 */
function toJavaScript(file: string, document: Document, issues: ConfigIssue[]): unknown {
  try {
    return document.toJS();
  } catch (error) {
    // yaml 2.9 raises this ReferenceError when the uses of an alias, times the aliases inside
    // its value, exceed toJS's maxAliasCount (100 by default), which bounds an alias bomb.
    const aliasBomb = error instanceof ReferenceError && error.message === ALIAS_LIMIT_MESSAGE;
    const tooDeep = error instanceof RangeError && error.message === STACK_OVERFLOW;
    if (!aliasBomb && !tooDeep) throw error;
    issues.push({
      file,
      field: '(syntax)',
      message: aliasBomb
        ? 'invalid YAML: aliases (*name) expand to too many values; write the values out ' +
          'or use fewer aliases'
        : describeYamlError(STACK_OVERFLOW),
    });
    return undefined;
  }
}

/**
 * Returns the parsed documents, or none when one of them nests lists or mappings deeper than
 * `MAX_NESTING` levels; that document gets an issue naming where.
 */
function withinNesting(parsed: ParsedFile[], issues: ConfigIssue[]): ParsedFile[] {
  for (const document of parsed) {
    const path = findTooDeepValue(document.data);
    if (path === undefined) continue;
    issues.push({
      file: document.file,
      field: formatField(path.slice(0, MAX_NESTING + 1)),
      message: `lists or mappings nest more than ${MAX_NESTING} levels deep; ${NESTING_HINT}`,
    });
    return [];
  }
  return parsed;
}

/**
 * Parses a `.json` file with JSON.parse, so that what YAML would also accept (comments,
 * trailing commas, unquoted keys) is an error with its line and column. A file that contains
 * only `null` declares nothing.
 */
function parseJsonFile(file: string, text: string, issues: ConfigIssue[]): ParsedFile[] {
  // Editors on Windows may start a file with a byte order mark, which JSON.parse rejects.
  const bom = text.startsWith('\uFEFF') ? 1 : 0;
  const body = text.slice(bom);
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // Editors show no column for the byte order mark, so the column is counted without it.
    const offset = jsonErrorOffset(body, message);
    const before = body.slice(0, offset);
    issues.push({
      file,
      line: before.split('\n').length,
      column: offset - before.lastIndexOf('\n'),
      field: '(syntax)',
      message:
        `invalid JSON: ${describeJsonError(message)}; ` +
        'a .json file is read as strict JSON, without comments or trailing commas ' +
        '(name it .yaml to read it as YAML)',
    });
    return [];
  }
  const duplicate = findDuplicateJsonKey(body);
  if (duplicate !== undefined) {
    const before = body.slice(0, duplicate.offset);
    issues.push({
      file,
      line: before.split('\n').length,
      column: duplicate.offset - before.lastIndexOf('\n'),
      field: '(syntax)',
      message:
        `invalid JSON: key ${JSON.stringify(duplicate.key)} appears twice in one object; ` +
        'remove one of them',
    });
    return [];
  }
  return data === null ? [] : withinNesting([new ParsedFile(file, text, data)], issues);
}

/**
 * Returns the offset of a JSON syntax error in UTF-16 code units, where the scanner finds it.
 * If the scanner finds none, the offset is the "at position N" of the JSON.parse message,
 * which Node.js 20 leaves out of "Unexpected token" messages, or else the end of the text.
 */
function jsonErrorOffset(text: string, message: string): number {
  const found = findJsonSyntaxError(text);
  if (found !== undefined) return found;
  const position = /at position (\d+)/.exec(message);
  return position === null ? text.length : Number(position[1]);
}

/**
 * Returns a JSON.parse message on one line and without its position, which the issue carries.
 * Line breaks and tabs in the source excerpt that "Unexpected token" messages quote become
 * \n, \r and \t.
 */
function describeJsonError(message: string): string {
  return message
    .replace(/ at position \d+.*$/, '')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t');
}

function issueFromSchema(parsed: ParsedFile, problem: SchemaProblem): ConfigIssue {
  return {
    file: parsed.file,
    line: lineOf(parsed, problem.path),
    ...describeSchemaProblem(parsed.data, problem),
  };
}

/**
 * Returns the 1-based line of the deepest node along `path` that exists. For
 * a field of a mapping, that is the line of its key, which is where an
 * unknown field starts even when its value begins on the next line.
 */
function lineOf(parsed: ParsedFile, path: ConfigPath): number | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const offset = offsetOf(parsed.document, path.slice(0, depth));
    if (offset !== undefined) return parsed.lines.linePos(offset).line;
  }
  return undefined;
}

function offsetOf(document: Document, path: ConfigPath): number | undefined {
  const last = path.at(-1);
  const parent = last === undefined ? undefined : document.getIn(path.slice(0, -1), true);
  if (isMap(parent)) {
    // A number names the pair at that index, as in the list that the schema makes of the
    // mapping form of header `set`.
    const pair =
      typeof last === 'number'
        ? parent.items[last]
        : parent.items.find((item) => isScalar(item.key) && item.key.value === last);
    return (pair?.key as Node | undefined)?.range?.[0];
  }
  return (document.getIn(path, true) as Node | undefined)?.range?.[0];
}

/** Reads standard input to its end. A terminal is refused, because nothing would end the read. */
async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) {
    throw new ConfigError([
      {
        file: STDIN_NAME,
        field: '(file)',
        message:
          'cannot read config: -f - reads standard input, which is a terminal; pipe a file in, such as: loomctl apply -f - < config.yaml',
      },
    ]);
  }
  return readConfigStream(STDIN_NAME, process.stdin);
}
