import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

import {
  ConfigError,
  formatConfigIssue,
  LoomError,
  type ConfigIssue,
  type LoomErrorCode,
} from './errors.js';

const CODE_KEY = 'loom-error-code';
const ISSUES_KEY = 'loom-config-issues';
const OMITTED_KEY = 'loom-config-issues-omitted';

/**
 * Bounds of the issues sent with an invalid configuration. They travel in trailing metadata,
 * which HTTP/2 peers cap (Node's http2 default maxHeaderListSize is 65,535 bytes), so an apply with
 * thousands of errors sends the first ones and the count of the rest.
 */
const MAX_SENT_ISSUES = 100;
const MAX_ISSUES_JSON_BYTES = 16 * 1024;
/**
 * Maximum length of an issue message sent in full. A conflict of a stored route with short names and paths
 * is about 350 characters. Longer names and paths can exceed the limit, and then the message
 * loses its middle, so that the fix at its end stays.
 */
const MAX_ISSUE_MESSAGE = 1_000;
/** Characters kept from the end of a longer message, where the fix is. */
const KEPT_MESSAGE_END = 400;
/**
 * Maximum length of an error's status message, with or without config issues. Messages quote
 * values from the request, such as a name, and grpc-js sends the message percent-encoded in a
 * trailer, up to 12 bytes per character. A 100,000-character name made the trailers exceed the
 * client's 65,535-byte header list limit, and the call and the calls after it on that connection
 * got no response until their deadline. 4,000 characters take at most 48,000 bytes.
 */
const MAX_DETAILS_LENGTH = 4_000;
const MAX_ISSUE_VALUE = 300;

const GRPC_STATUS: Record<LoomErrorCode, status> = {
  LOOM_INVALID_CONFIG: status.INVALID_ARGUMENT,
  LOOM_INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  LOOM_NOT_FOUND: status.NOT_FOUND,
  LOOM_VERSION_CONFLICT: status.FAILED_PRECONDITION,
  LOOM_ALREADY_EXISTS: status.ALREADY_EXISTS,
  LOOM_STORE_UNAVAILABLE: status.UNAVAILABLE,
  LOOM_UNAVAILABLE: status.UNAVAILABLE,
  LOOM_UNAUTHENTICATED: status.UNAUTHENTICATED,
  LOOM_PERMISSION_DENIED: status.PERMISSION_DENIED,
  LOOM_RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  LOOM_STORE_CORRUPT: status.INTERNAL,
  LOOM_SNAPSHOT_REJECTED: status.INVALID_ARGUMENT,
  LOOM_INTERNAL: status.INTERNAL,
};

/**
 * Converts any error raised by a handler into a gRPC error. A LoomError keeps
 * its code (and config issues) in trailing metadata so that loomctl can
 * rebuild it; anything else becomes INTERNAL without internal details.
 */
export function toServiceError(error: unknown): Partial<ServiceError> {
  const metadata = new Metadata();
  if (!(error instanceof LoomError)) {
    metadata.set(CODE_KEY, 'LOOM_INTERNAL');
    // Internal details stay in the server log, never in the client's output.
    return {
      code: status.INTERNAL,
      details: 'internal error; see the control plane log',
      metadata,
    };
  }

  metadata.set(CODE_KEY, error.code);
  if (!(error instanceof ConfigError)) {
    const details = dropMiddle(error.message, MAX_DETAILS_LENGTH);
    return { code: GRPC_STATUS[error.code], details, metadata };
  }

  const { json, sent } = boundedIssues(error.issues);
  metadata.set(ISSUES_KEY, json);
  if (sent < error.issues.length) metadata.set(OMITTED_KEY, String(error.issues.length - sent));
  // The details repeat only the first issue: the list is in the metadata, and both share a limit.
  const first = error.issues[0]
    ? `; the first: ${formatConfigIssue(shorten(error.issues[0]))}`
    : '';
  const count = error.issues.length === 1 ? '1 error' : `${error.issues.length} errors`;
  const details = `invalid configuration, nothing was written: ${count}${first}`;
  return {
    code: GRPC_STATUS[error.code],
    details: dropMiddle(details, MAX_DETAILS_LENGTH),
    metadata,
  };
}

/** Serializes as many issues as fit both bounds, as ASCII-only JSON. */
function boundedIssues(issues: ConfigIssue[]): { json: string; sent: number } {
  const parts: string[] = [];
  let bytes = 2;
  for (const issue of issues.slice(0, MAX_SENT_ISSUES)) {
    const part = asciiOnly(JSON.stringify(shorten(issue)));
    if (bytes + part.length + 1 > MAX_ISSUES_JSON_BYTES) break;
    parts.push(part);
    bytes += part.length + 1;
  }
  return { json: `[${parts.join(',')}]`, sent: parts.length };
}

/**
 * Cuts a message over `MAX_ISSUE_MESSAGE` characters by dropping its middle, because messages
 * end with the fix, and the value of an issue to its first `MAX_ISSUE_VALUE` characters.
 */
function shorten(issue: ConfigIssue): ConfigIssue {
  const value = issue.value === undefined ? undefined : JSON.stringify(issue.value);
  return {
    ...issue,
    message: dropMiddle(issue.message, MAX_ISSUE_MESSAGE),
    value:
      value !== undefined && value.length > MAX_ISSUE_VALUE
        ? `${value.slice(0, MAX_ISSUE_VALUE)}...`
        : issue.value,
  };
}

/**
 * Cuts `message` to at most `maxLength` characters by dropping its middle, because messages end
 * with the fix.
 */
function dropMiddle(message: string, maxLength: number): string {
  if (message.length <= maxLength) return message;
  const separator = ' ... ';
  const head = message.slice(0, maxLength - KEPT_MESSAGE_END - separator.length);
  return `${head}${separator}${message.slice(-KEPT_MESSAGE_END)}`;
}

/** Escapes non-ASCII characters, which grpc-js rejects in text metadata, as JSON `\uXXXX`. */
function asciiOnly(text: string): string {
  return text.replace(
    /[^\x20-\x7e]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * Drops what grpc-js 1.14 appends to connection errors without content: an empty
 * "Resolution note:" and the "Error: " of the wrapped error. Both loomctl's calls and the
 * etcd3 client's calls get such errors.
 */
export function tidyGrpcDetails(details: string): string {
  return details
    .replace(/\s*Resolution note:\s*$/, '')
    .replace(/Last error: Error: /, 'last error: ')
    .replace(/\.$/, '');
}

/** Converts an error from a gRPC call back into a LoomError where the server sent one. */
export function fromServiceError(error: ServiceError): LoomError {
  const code = error.metadata?.get(CODE_KEY)[0];
  const issues = error.metadata?.get(ISSUES_KEY)[0];
  if (code === 'LOOM_INVALID_CONFIG' && typeof issues === 'string') {
    const list = JSON.parse(issues) as ConfigIssue[];
    const omitted = Number(error.metadata.get(OMITTED_KEY)[0] ?? 0);
    if (omitted > 0) {
      list.push({
        field: '(more)',
        message: `${omitted} more errors not shown; the control plane sends the first ${list.length}`,
      });
    }
    return new ConfigError(list);
  }
  if (typeof code === 'string' && code in GRPC_STATUS) {
    return new LoomError(code as LoomErrorCode, error.details, { cause: error });
  }
  if (error.code === status.UNAVAILABLE || error.code === status.DEADLINE_EXCEEDED) {
    return new LoomError('LOOM_UNAVAILABLE', error.details, { cause: error, retryable: true });
  }
  return new LoomError('LOOM_INTERNAL', `${status[error.code]}: ${error.details}`, {
    cause: error,
  });
}
