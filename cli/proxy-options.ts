import { availableParallelism } from 'node:os';

import type { Command } from 'commander';

import { LoomError } from '../common/errors.js';
import type { DataPlaneOptions } from '../data-plane/data-plane.js';
import type { EscapedSlashAction } from '../data-plane/proxy/exchange.js';
import { TrustedProxies } from '../data-plane/proxy/trusted-proxies.js';

import { formatDuration, parseFlagDuration, type DurationRule } from './duration.js';

/** Data-plane flags of the request path: trusted proxies, client limits, upstream timeouts. */
export interface ProxyFlags {
  trustedProxies?: string;
  maxRequestBody: string;
  maxHeaderBytes: string;
  maxHeaderCount: string;
  headersTimeout: string;
  requestTimeout: string;
  tunnelIdleTimeout: string;
  sendTimeout: string;
  upstreamConnectTimeout: string;
  upstreamHeadersTimeout: string;
  upstreamBodyTimeout: string;
  upstreamKeepAlive: string;
  maxResponseHeaderBytes: string;
  workers: string;
  escapedSlashes: string;
}

/** Adds the request-path flags to the `data-plane` command. */
export function addProxyOptions(command: Command): Command {
  return command
    .option(
      '--trusted-proxies <list>',
      'comma-separated addresses and CIDR ranges whose X-Forwarded-* headers are kept, such as 10.0.0.0/8,127.0.0.1 (default none)',
    )
    .option(
      '--max-request-body <bytes>',
      'largest request body for routes that set none; 0 means no limit',
      '10485760',
    )
    .option('--max-header-bytes <bytes>', 'largest request head; larger gets 431', '16384')
    .option('--max-header-count <n>', 'maximum request header fields; more get 431', '100')
    .option(
      '--headers-timeout <duration>',
      'time to receive a request head, such as 10s; slower gets 408',
      '10s',
    )
    .option(
      '--request-timeout <duration>',
      'time to receive a whole request, body included, such as 5m; 0 disables it, other ' +
        'values must be at least --headers-timeout',
      '5m',
    )
    .option(
      '--send-timeout <duration>',
      'longest time a client may take no bytes while some wait to be sent to it, such as ' +
        '60s; it is then cut off; 0 means no limit',
      '60s',
    )
    .option(
      '--tunnel-idle-timeout <duration>',
      'idle time after which an upgraded connection closes, such as 5m; 0 means no limit',
      '5m',
    )
    .option(
      '--upstream-connect-timeout <duration>',
      'time to connect to a target, such as 5s or 700ms; 0 means no timeout',
      '5s',
    )
    .option(
      '--upstream-headers-timeout <duration>',
      'time to receive the response head of a target, such as 30s; 0 means no timeout',
      '30s',
    )
    .option(
      '--upstream-body-timeout <duration>',
      'longest pause inside a response body, such as 30s; 0 means no timeout',
      '30s',
    )
    .option(
      '--upstream-keep-alive <duration>',
      'idle time after which a pooled upstream connection closes, such as 4s',
      '4s',
    )
    .option(
      '--max-response-header-bytes <bytes>',
      'limit on the total bytes of upstream response header names and values, without separators; reaching it gets 502',
      '16384',
    )
    .option(
      '--escaped-slashes <action>',
      'action for "%2F" (an escaped "/") in a request path: keep forwards it as data, ' +
        'reject responds with 400 escaped_slash; "%5C" always gets 400',
      'keep',
    )
    .option(
      '--workers <n>',
      'processes that serve traffic on the one listener; 0 or auto means one per core',
      '1',
    );
}

/**
 * Converts `--workers` into a process count: a whole number, with `0` and `auto` meaning the
 * number of cores (`os.availableParallelism()`).
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the value.
 */
export function workerCount(value: string): number {
  const text = value.trim();
  if (text === 'auto' || text === '0') {
    return availableParallelism();
  }
  if (!/^\d+$/.test(text)) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --workers ${JSON.stringify(value)}: expected a whole number, or 0 or auto for one worker per core`,
    );
  }
  return Number(text);
}

/** Range of a whole-number flag and the words its error message uses. */
interface WholeNumberRule {
  /** 0 where 0 has a meaning (stated by `zero`), otherwise 1. */
  min: 0 | 1;
  unit: 'bytes' | 'header fields';
  /** Meaning of 0, for flags with `min` 0. */
  zero?: string;
  /** Value suggested in the error message: the flag's default. */
  example: number;
}

/** The whole-number flags of the request path, keyed by their `ProxyFlags` field. */
const WHOLE_NUMBER_FLAGS = {
  maxRequestBody: {
    flag: '--max-request-body',
    rule: { unit: 'bytes', min: 0, zero: 'no limit', example: 10_485_760 },
  },
  maxHeaderBytes: { flag: '--max-header-bytes', rule: { unit: 'bytes', min: 1, example: 16_384 } },
  maxHeaderCount: {
    flag: '--max-header-count',
    rule: { unit: 'header fields', min: 1, example: 100 },
  },
  maxResponseHeaderBytes: {
    flag: '--max-response-header-bytes',
    rule: { unit: 'bytes', min: 1, example: 16_384 },
  },
} satisfies Partial<Record<keyof ProxyFlags, { flag: string; rule: WholeNumberRule }>>;

/** The duration flags of the request path and the meaning of 0 where they take it. */
const DURATION_FLAGS = {
  headersTimeout: { flag: '--headers-timeout', rule: {} },
  requestTimeout: { flag: '--request-timeout', rule: { zero: 'no timeout' } },
  sendTimeout: { flag: '--send-timeout', rule: { zero: 'no limit' } },
  tunnelIdleTimeout: { flag: '--tunnel-idle-timeout', rule: { zero: 'no limit' } },
  upstreamConnectTimeout: { flag: '--upstream-connect-timeout', rule: { zero: 'no timeout' } },
  upstreamHeadersTimeout: { flag: '--upstream-headers-timeout', rule: { zero: 'no timeout' } },
  upstreamBodyTimeout: { flag: '--upstream-body-timeout', rule: { zero: 'no timeout' } },
  upstreamKeepAlive: { flag: '--upstream-keep-alive', rule: {} },
} satisfies Partial<Record<keyof ProxyFlags, { flag: string; rule: DurationRule }>>;

type WholeNumberFlag = keyof typeof WHOLE_NUMBER_FLAGS;
type DurationFlag = keyof typeof DURATION_FLAGS;

/**
 * Converts the request-path flags into data-plane options. The ranges are those that the proxy
 * server and the upstream registry accept, plus the maximum delay of a Node.js timer.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` with one line per invalid flag.
 */
export function proxyOptions(flags: ProxyFlags): Pick<DataPlaneOptions, 'proxy' | 'upstreams'> {
  const problems: string[] = [];
  const values = {} as Record<WholeNumberFlag | DurationFlag, number>;
  const parse = (key: WholeNumberFlag | DurationFlag, read: () => number): void => {
    try {
      values[key] = read();
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      problems.push(error.message);
    }
  };
  for (const [key, { flag, rule }] of Object.entries(WHOLE_NUMBER_FLAGS)) {
    parse(key as WholeNumberFlag, () => wholeNumber(flag, flags[key as WholeNumberFlag], rule));
  }
  for (const [key, { flag, rule }] of Object.entries(DURATION_FLAGS)) {
    parse(key as DurationFlag, () =>
      parseFlagDuration(flags[key as DurationFlag], flag, rule as DurationRule),
    );
  }

  const requestTimeout = values.requestTimeout;
  const headersTimeout = values.headersTimeout;
  // Node.js `http.createServer` and the proxy server reject a nonzero request timeout that is
  // shorter than the headers timeout.
  if (
    requestTimeout !== undefined &&
    headersTimeout !== undefined &&
    requestTimeout !== 0 &&
    requestTimeout < headersTimeout
  ) {
    const least = formatDuration(headersTimeout);
    problems.push(
      `invalid --request-timeout ${JSON.stringify(flags.requestTimeout)}: expected 0 or at ` +
        `least --headers-timeout (${least}); use 0 for no timeout, or raise it to ${least} ` +
        'or more',
    );
  }

  let trustedProxies: string[] | undefined;
  try {
    trustedProxies = trustedProxyList(flags.trustedProxies);
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    problems.push(error.message);
  }

  let escapedSlashes: EscapedSlashAction | undefined;
  try {
    escapedSlashes = escapedSlashAction(flags.escapedSlashes);
  } catch (error) {
    if (!(error instanceof LoomError)) throw error;
    problems.push(error.message);
  }

  if (problems.length > 0) {
    throw new LoomError('LOOM_INVALID_ARGUMENT', problems.join('\n'));
  }
  return {
    proxy: {
      trustedProxies,
      maxRequestBodyBytes: values.maxRequestBody,
      maxHeaderBytes: values.maxHeaderBytes,
      maxHeaderCount: values.maxHeaderCount,
      escapedSlashes,
      headersTimeoutMs: values.headersTimeout,
      requestTimeoutMs: values.requestTimeout,
      tunnelIdleTimeoutMs: values.tunnelIdleTimeout,
      sendTimeoutMs: values.sendTimeout,
      upstreamConnectTimeoutMs: values.upstreamConnectTimeout,
      upstreamHeadersTimeoutMs: values.upstreamHeadersTimeout,
      upstreamBodyTimeoutMs: values.upstreamBodyTimeout,
    },
    upstreams: {
      connectTimeout: values.upstreamConnectTimeout,
      headersTimeout: values.upstreamHeadersTimeout,
      bodyTimeout: values.upstreamBodyTimeout,
      keepAliveTimeout: values.upstreamKeepAlive,
      maxResponseHeaderBytes: values.maxResponseHeaderBytes,
    },
  };
}

/**
 * Reads `--escaped-slashes`: `keep` or `reject`, in any case.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the value.
 */
function escapedSlashAction(value: string): EscapedSlashAction {
  const text = value.trim().toLowerCase();
  if (text === 'keep' || text === 'reject') return text;
  throw new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `invalid --escaped-slashes ${JSON.stringify(value)}: expected keep (forward "%2F" as ` +
      'data, the default) or reject (respond with 400)',
  );
}

/**
 * Splits `--trusted-proxies` and checks each entry as the proxy does.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag and every invalid entry.
 */
function trustedProxyList(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const entries = value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  const invalid = entries.filter((entry) => {
    try {
      new TrustedProxies([entry]);
      return false;
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      return true;
    }
  });
  if (invalid.length > 0) {
    const names = invalid.map((entry) => JSON.stringify(entry)).join(', ');
    const problem =
      invalid.length === 1
        ? 'is not an IPv4 or IPv6 address or CIDR range'
        : 'are not IPv4 or IPv6 addresses or CIDR ranges';
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid --trusted-proxies ${JSON.stringify(value)}: ${names} ${problem}; use entries ` +
        'such as 10.0.0.0/8, 127.0.0.1 or fd00::/8, separated by commas',
    );
  }
  return entries;
}

function wholeNumber(flag: string, value: string, rule: WholeNumberRule): number {
  const text = value.trim();
  const number = Number(text);
  if (/^\d+$/.test(text) && number >= rule.min && number <= Number.MAX_SAFE_INTEGER) {
    return number;
  }
  const zero = rule.zero === undefined ? '' : ` (0 means ${rule.zero})`;
  const range = rule.min === 0 ? '0 or more' : 'at least 1';
  throw new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `invalid ${flag} ${JSON.stringify(value)}: expected a whole number of ${rule.unit}, ` +
      `${range}${zero}; use a value such as ${rule.example}`,
  );
}
