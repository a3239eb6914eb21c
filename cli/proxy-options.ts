import { availableParallelism } from 'node:os';

import type { Command } from 'commander';

import { LoomError } from '../common/errors.js';
import type { DataPlaneOptions } from '../data-plane/data-plane.js';
import { TrustedProxies } from '../data-plane/proxy/trusted-proxies.js';

import { MAX_TIMER_MS } from '../common/timers.js';
import { parseDuration } from './security-options.js';

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
      '10000',
    )
    .option(
      '--request-timeout <duration>',
      'time to receive a whole request, body included, such as 5m; 0 disables it, other ' +
        'values must be at least --headers-timeout',
      '300000',
    )
    .option(
      '--send-timeout <duration>',
      'longest time a client may take no bytes while some wait to be sent to it, such as ' +
        '60s; it is then cut off; 0 means no limit',
      '60000',
    )
    .option(
      '--tunnel-idle-timeout <duration>',
      'idle time after which an upgraded connection closes, such as 5m; 0 means no limit',
      '300000',
    )
    .option(
      '--upstream-connect-timeout <duration>',
      'time to connect to a target, such as 5s or 700ms (a bare number is milliseconds); ' +
        '0 means no timeout',
      '5000',
    )
    .option(
      '--upstream-headers-timeout <duration>',
      'time to receive the response head of a target, such as 30s (a bare number is ' +
        'milliseconds); 0 means no timeout',
      '30000',
    )
    .option(
      '--upstream-body-timeout <duration>',
      'longest pause inside a response body, such as 30s (a bare number is milliseconds); ' +
        '0 means no timeout',
      '30000',
    )
    .option(
      '--upstream-keep-alive <duration>',
      'idle time after which a pooled upstream connection closes, such as 4s',
      '4000',
    )
    .option(
      '--max-response-header-bytes <bytes>',
      'limit on the total bytes of upstream response header names and values, without separators; reaching it gets 502',
      '16384',
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
  max: number;
  unit: 'milliseconds' | 'bytes' | 'header fields';
  /** Meaning of 0, for flags with `min` 0. */
  zero?: string;
  /** Value suggested in the error message: the flag's default. */
  example: number;
  /** True when the flag also takes a duration with a unit, such as 700ms or 5s. */
  durationUnits?: true;
}

const TIMEOUT = { unit: 'milliseconds', max: MAX_TIMER_MS } as const;
const SIZE = { unit: 'bytes', max: Number.MAX_SAFE_INTEGER } as const;

/** The whole-number flags of the request path, keyed by their `ProxyFlags` field. */
const WHOLE_NUMBER_FLAGS = {
  maxRequestBody: {
    flag: '--max-request-body',
    rule: { ...SIZE, min: 0, zero: 'no limit', example: 10_485_760 },
  },
  maxHeaderBytes: { flag: '--max-header-bytes', rule: { ...SIZE, min: 1, example: 16_384 } },
  maxHeaderCount: {
    flag: '--max-header-count',
    rule: { unit: 'header fields', min: 1, max: Number.MAX_SAFE_INTEGER, example: 100 },
  },
  headersTimeout: {
    flag: '--headers-timeout',
    rule: { ...TIMEOUT, min: 1, example: 10_000, durationUnits: true },
  },
  requestTimeout: {
    flag: '--request-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no timeout', example: 300_000, durationUnits: true },
  },
  sendTimeout: {
    flag: '--send-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no limit', example: 60_000, durationUnits: true },
  },
  tunnelIdleTimeout: {
    flag: '--tunnel-idle-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no limit', example: 300_000, durationUnits: true },
  },
  upstreamConnectTimeout: {
    flag: '--upstream-connect-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no timeout', example: 5_000, durationUnits: true },
  },
  upstreamHeadersTimeout: {
    flag: '--upstream-headers-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no timeout', example: 30_000, durationUnits: true },
  },
  upstreamBodyTimeout: {
    flag: '--upstream-body-timeout',
    rule: { ...TIMEOUT, min: 0, zero: 'no timeout', example: 30_000, durationUnits: true },
  },
  upstreamKeepAlive: {
    flag: '--upstream-keep-alive',
    rule: { ...TIMEOUT, min: 1, example: 4_000, durationUnits: true },
  },
  maxResponseHeaderBytes: {
    flag: '--max-response-header-bytes',
    rule: { ...SIZE, min: 1, example: 16_384 },
  },
} satisfies Partial<Record<keyof ProxyFlags, { flag: string; rule: WholeNumberRule }>>;

type WholeNumberFlag = keyof typeof WHOLE_NUMBER_FLAGS;

/**
 * Converts the request-path flags into data-plane options. The ranges are those that the proxy
 * server and the upstream registry accept, plus the maximum delay of a Node.js timer.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` with one line per invalid flag.
 */
export function proxyOptions(flags: ProxyFlags): Pick<DataPlaneOptions, 'proxy' | 'upstreams'> {
  const problems: string[] = [];
  const values = {} as Record<WholeNumberFlag, number>;
  for (const [key, { flag, rule }] of Object.entries(WHOLE_NUMBER_FLAGS)) {
    try {
      values[key as WholeNumberFlag] = wholeNumber(flag, flags[key as WholeNumberFlag], rule);
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      problems.push(error.message);
    }
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
    problems.push(
      `invalid --request-timeout ${JSON.stringify(flags.requestTimeout)}: expected 0 or at ` +
        `least --headers-timeout (${headersTimeout}); use 0 for no timeout, or raise it to ` +
        `${headersTimeout} or more`,
    );
  }

  let trustedProxies: string[] | undefined;
  try {
    trustedProxies = trustedProxyList(flags.trustedProxies);
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
  const withUnit = rule.durationUnits === true && /^\d+(?:\.\d+)?(ms|s|m|h)$/.test(text);
  // parseDuration rejects a duration above 0 that rounds to 0ms, naming the flag.
  const number = withUnit ? parseDuration(text, flag, 'ms') : Number(text);
  if ((withUnit || /^\d+$/.test(text)) && number >= rule.min && number <= rule.max) {
    return number;
  }
  const zero = rule.zero === undefined ? '' : ` (0 means ${rule.zero})`;
  if (rule.durationUnits === true) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${flag} ${JSON.stringify(value)}: expected a whole number of milliseconds, ` +
        `from ${rule.min} to ${rule.max}${zero}, or a duration such as 700ms or 5s; use a value such as ` +
        `${rule.example}`,
    );
  }
  const range =
    rule.max === Number.MAX_SAFE_INTEGER
      ? rule.min === 0
        ? '0 or more'
        : 'at least 1'
      : `from ${rule.min} to ${rule.max}`;
  throw new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `invalid ${flag} ${JSON.stringify(value)}: expected a whole number of ${rule.unit}, ` +
      `${range}${zero}; use a value such as ${rule.example}`,
  );
}
