/**
 * Stable error codes. Callers branch on `code`, never on message text. Each
 * code maps to one gRPC status and one HTTP status in one place.
 */
export type LoomErrorCode =
  | 'LOOM_INVALID_CONFIG'
  | 'LOOM_NOT_FOUND'
  | 'LOOM_VERSION_CONFLICT'
  | 'LOOM_ALREADY_EXISTS'
  | 'LOOM_STORE_UNAVAILABLE'
  | 'LOOM_STORE_CORRUPT'
  | 'LOOM_SNAPSHOT_REJECTED'
  | 'LOOM_INVALID_ARGUMENT'
  | 'LOOM_UNAVAILABLE'
  | 'LOOM_UNAUTHENTICATED'
  | 'LOOM_PERMISSION_DENIED'
  | 'LOOM_RESOURCE_EXHAUSTED'
  | 'LOOM_INTERNAL';

/** Base class of every error Loom raises on purpose. */
export class LoomError extends Error {
  readonly code: LoomErrorCode;
  /** True when the same call may succeed later without any change. */
  readonly retryable: boolean;

  constructor(
    code: LoomErrorCode,
    message: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LoomError';
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }
}

/** One problem found in a configuration, located as precisely as the source allows. */
export interface ConfigIssue {
  /** File the value came from, when it came from a file. */
  file?: string;
  /** 1-based line in that file, when known. */
  line?: number;
  /** 1-based column on that line, when known (syntax errors). */
  column?: number;
  /** "route" or "upstream", with the resource name when it has one. */
  kind?: 'route' | 'upstream';
  name?: string;
  /** Dotted path of the field, such as `targets[0].url`. */
  field: string;
  /** The offending value, as the user wrote it. */
  value?: unknown;
  /** What is wrong and what would be valid. */
  message: string;
  /**
   * Plural noun phrase for the warnings of this kind, such as `routes that can never match`.
   * loomctl prints the first few warnings of a kind and counts the rest in one line with it.
   */
  summary?: string;
}

/** Formats an issue as one line: `file:line[:column]: route "x" field: message (got value)`. */
export function formatConfigIssue(issue: ConfigIssue): string {
  const line = issue.line ? `:${issue.line}${issue.column ? `:${issue.column}` : ''}` : '';
  const where = issue.file ? `${issue.file}${line}: ` : '';
  const resource = issue.kind ? `${issue.kind} ${JSON.stringify(issue.name ?? '')} ` : '';
  const got = issue.value === undefined ? '' : ` (got ${JSON.stringify(issue.value)})`;
  return `${where}${resource}${issue.field}: ${issue.message}${got}`;
}

/** A configuration that failed validation; nothing of it was written. */
export class ConfigError extends LoomError {
  readonly issues: ConfigIssue[];
  /** Problems found alongside the errors that alone would not stop an apply. */
  readonly warnings: ConfigIssue[];

  constructor(issues: ConfigIssue[], warnings: ConfigIssue[] = []) {
    const lines = issues.map((issue) => `  - ${formatConfigIssue(issue)}`);
    super(
      'LOOM_INVALID_CONFIG',
      `invalid configuration, nothing was written:\n${lines.join('\n')}`,
    );
    this.name = 'ConfigError';
    this.issues = issues;
    this.warnings = warnings;
  }
}
