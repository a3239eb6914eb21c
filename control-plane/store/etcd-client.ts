import { readFileSync } from 'node:fs';

import { GRPCUnavailableError, isRecoverableError, type IOptions } from 'etcd3';

import { LoomError } from '../../common/errors.js';

/** Files of a TLS connection to etcd, all PEM. */
export interface EtcdTlsFiles {
  /** CA bundle that verifies etcd's certificate; without it the system roots are used. */
  ca?: string;
  /** Client certificate and key, for etcd's `--client-cert-auth`; both or neither. */
  cert?: string;
  key?: string;
}

/** Connection settings of the etcd client. */
export interface EtcdClientSettings {
  endpoints: string[];
  requestTimeoutMs: number;
  watchBackoffMaxMs: number;
  tls?: EtcdTlsFiles;
  /** etcd user and password; the client exchanges them for a token. */
  auth?: { username: string; password: string };
}

/**
 * Builds the etcd3 client options: message limits, keepalive, request
 * deadlines, a fault-handling policy that leaves retries to the caller, and
 * TLS and password authentication when configured.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` when a TLS file cannot be read or
 *   only one of certificate and key is set.
 */
export function etcdClientOptions(settings: EtcdClientSettings): IOptions {
  const options = clientOptions(
    settings.endpoints,
    settings.requestTimeoutMs,
    settings.watchBackoffMaxMs,
  );
  if (settings.tls !== undefined) options.credentials = tlsCredentials(settings.tls);
  if (settings.auth !== undefined) options.auth = { ...settings.auth };
  return options;
}

function tlsCredentials(files: EtcdTlsFiles): NonNullable<IOptions['credentials']> {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      'an etcd client certificate needs both --etcd-cert and --etcd-key; set both or neither',
    );
  }
  return {
    // grpc-js uses the system roots when the root certificate is null.
    rootCertificate: (files.ca === undefined ? null : readPem(files.ca, '--etcd-ca')) as Buffer,
    privateKey: files.key === undefined ? undefined : readPem(files.key, '--etcd-key'),
    certChain: files.cert === undefined ? undefined : readPem(files.cert, '--etcd-cert'),
  };
}

function readPem(file: string, option: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new LoomError('LOOM_INVALID_ARGUMENT', `cannot read ${option} file ${file}: ${error}`, {
      cause: error,
    });
  }
}

function clientOptions(
  endpoints: string[],
  requestTimeoutMs: number,
  watchBackoffMaxMs: number,
): IOptions {
  return {
    hosts: endpoints,
    // A range of 100,000 routes is tens of MiB, far above grpc-js's 4 MiB default.
    grpcOptions: {
      'grpc.max_receive_message_length': 512 * 1024 * 1024,
      'grpc.max_send_message_length': 512 * 1024 * 1024,
      // Pings on connections with open calls notice a silent partition within
      // 40 s; etcd accepts pings down to its --grpc-keepalive-min-time of 5 s.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // Without a local pool, grpc-js shares one connection between the read
      // client and the watch client, and a stalled watch connection could not
      // be replaced.
      'grpc.use_local_subchannel_pool': 1,
    },
    defaultCallOptions: (context) =>
      context.isStream ? {} : { deadline: Date.now() + requestTimeoutMs },
    // etcd3 by default retries a failed call three times and stops calling a
    // host for five seconds after three failures. The store reports failures as
    // retryable and leaves the retry policy to its caller, which then reaches
    // etcd again as soon as it responds. In a cluster, a member whose call
    // failed is skipped for a second so that the next calls reach the others.
    faultHandling: {
      host: () => (endpoints.length > 1 ? memberBreaker(MEMBER_SKIP_MS) : PASS_THROUGH_POLICY),
      global: PASS_THROUGH_POLICY,
      watchBackoff: new CappedBackoff(100, watchBackoffMaxMs),
    },
  };
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = NonNullable<FaultHandling['global']>;
type Backoff = NonNullable<FaultHandling['watchBackoff']>;

/**
 * A fault-handling policy that runs each call once. etcd3 v1.1.2 only calls
 * `execute` on its policies; the event members exist to satisfy the type.
 */
const PASS_THROUGH_POLICY = {
  execute: async <T>(call: (context: { signal: AbortSignal }) => PromiseLike<T> | T) =>
    call({ signal: new AbortController().signal }),
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
} as unknown as Policy;

/** Time a cluster member is skipped after a call to it failed as unreachable. */
const MEMBER_SKIP_MS = 1_000;

/**
 * Creates a per-member policy for clusters. After a call to the member fails
 * with a recoverable error, calls skip it for `skipMs`, and etcd3 sends them to
 * the next member instead. One call per window still finds out whether the member
 * is back. A single endpoint gets the pass-through policy, because skipping
 * the only member would only delay the first call after etcd returns.
 */
function memberBreaker(skipMs: number): Policy {
  let skipUntil = 0;
  return {
    execute: async <T>(call: (context: { signal: AbortSignal }) => PromiseLike<T> | T) => {
      if (Date.now() < skipUntil) {
        // etcd3 moves on to the next member when a call never reached this one.
        throw new GRPCUnavailableError('etcd member skipped after a recent failure');
      }
      try {
        return await call({ signal: new AbortController().signal });
      } catch (error) {
        if (error instanceof Error && isRecoverableError(error)) skipUntil = Date.now() + skipMs;
        throw error;
      }
    },
    onSuccess: () => ({ dispose: () => undefined }),
    onFailure: () => ({ dispose: () => undefined }),
  } as unknown as Policy;
}

/** Exponential backoff that doubles from `baseMs` up to `maxMs`, plus up to 20% jitter. */
class CappedBackoff implements Backoff {
  readonly duration: number;
  readonly #baseMs: number;
  readonly #maxMs: number;

  constructor(baseMs: number, maxMs: number) {
    this.#baseMs = Math.min(baseMs, maxMs);
    this.#maxMs = maxMs;
    this.duration = this.#baseMs * (1 + Math.random() * 0.2);
  }

  next(): CappedBackoff {
    return new CappedBackoff(this.#baseMs * 2, this.#maxMs);
  }
}
