import { availableParallelism } from 'node:os';

import type { Command } from 'commander';

import { LoomError } from '../common/errors.js';
import type { DataPlaneOptions } from '../data-plane/data-plane.js';

/** Data-plane flags of the request path: trusted proxies, client limits, upstream timeouts. */
export interface ProxyFlags {
  trustedProxies?: string;
  maxRequestBody: string;
  maxHeaderBytes: string;
  maxHeaderCount: string;
  headersTimeout: string;
  requestTimeout: string;
  tunnelIdleTimeout: string;
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
    .option('--max-header-count <n>', 'most request header fields; more get 431', '100')
    .option('--headers-timeout <ms>', 'time to receive a request head; slower gets 408', '10000')
    .option(
      '--request-timeout <ms>',
      'time to receive a whole request, body included; 0 disables it',
      '300000',
    )
    .option(
      '--tunnel-idle-timeout <ms>',
      'idle time after which an upgraded connection closes',
      '300000',
    )
    .option('--upstream-connect-timeout <ms>', 'time to connect to a target', '5000')
    .option(
      '--upstream-headers-timeout <ms>',
      'time to receive the response head of a target',
      '30000',
    )
    .option('--upstream-body-timeout <ms>', 'longest pause inside a response body', '30000')
    .option(
      '--upstream-keep-alive <ms>',
      'idle time after which a pooled upstream connection closes',
      '4000',
    )
    .option(
      '--max-response-header-bytes <bytes>',
      'largest upstream response head; larger gets 502',
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

/** Converts the request-path flags into data-plane options; throws on a value that is not a number. */
export function proxyOptions(flags: ProxyFlags): Pick<DataPlaneOptions, 'proxy' | 'upstreams'> {
  const trusted = flags.trustedProxies
    ?.split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  return {
    proxy: {
      trustedProxies: trusted,
      maxRequestBodyBytes: integer('--max-request-body', flags.maxRequestBody),
      maxHeaderBytes: integer('--max-header-bytes', flags.maxHeaderBytes),
      maxHeaderCount: integer('--max-header-count', flags.maxHeaderCount),
      headersTimeoutMs: integer('--headers-timeout', flags.headersTimeout),
      requestTimeoutMs: integer('--request-timeout', flags.requestTimeout),
      tunnelIdleTimeoutMs: integer('--tunnel-idle-timeout', flags.tunnelIdleTimeout),
      upstreamConnectTimeoutMs: integer('--upstream-connect-timeout', flags.upstreamConnectTimeout),
      upstreamHeadersTimeoutMs: integer('--upstream-headers-timeout', flags.upstreamHeadersTimeout),
    },
    upstreams: {
      connectTimeout: integer('--upstream-connect-timeout', flags.upstreamConnectTimeout),
      headersTimeout: integer('--upstream-headers-timeout', flags.upstreamHeadersTimeout),
      bodyTimeout: integer('--upstream-body-timeout', flags.upstreamBodyTimeout),
      keepAliveTimeout: integer('--upstream-keep-alive', flags.upstreamKeepAlive),
      maxResponseHeaderBytes: integer('--max-response-header-bytes', flags.maxResponseHeaderBytes),
    },
  };
}

function integer(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${flag} ${JSON.stringify(value)}: expected a whole number`,
    );
  }
  return Number(value);
}
