import { readFileSync } from 'node:fs';

import type { Command } from 'commander';

import { describeUnsendableToken, isSendableToken, parseCertificateRoles } from '../common/auth.js';
import { LoomError } from '../common/errors.js';
import {
  checkServerNameHasTls,
  parseTlsServerName,
  type ClientTlsFiles,
  type ServerTlsFiles,
} from '../common/tls.js';
import type { ControlPlaneOptions } from '../control-plane/control-plane.js';
import { DEFAULT_ADMISSION_RATE, DEFAULT_MAX_STREAMS } from '../control-plane/stream/admission.js';
import type { DataPlaneOptions } from '../data-plane/data-plane.js';
import { parseFlagDuration } from './duration.js';

/** Control-plane flags for TLS, credentials, stream limits and etcd security. */
export interface ControlPlaneSecurityFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  adminTokensFile?: string;
  adminCertRoles?: string;
  maxStreams: string;
  streamAdmissionRate: string;
  maxMessageBytes?: string;
  connectionIdleTimeout: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPassword?: string;
}

/** Data-plane flags for TLS, credentials, shutdown and the snapshot cache. */
export interface DataPlaneLifecycleFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  token?: string;
  drainTimeout: string;
  drainIdleGrace: string;
  drainAcceptGrace: string;
  snapshotCache?: string;
  snapshotCacheMaxAge: string;
  controlPlaneTimeout: string;
}

/** Adds the control plane's security and limit flags to `command`. */
export function addControlPlaneSecurityOptions(command: Command): Command {
  return command
    .option('--tls-cert <file>', 'PEM server certificate; turns on TLS for proxies and loomctl')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', 'PEM CA that must sign client certificates (mutual TLS)')
    .option('--admin-tokens-file <file>', 'file of role:token lines (roles read, write, proxy)')
    .option(
      '--admin-cert-roles <list>',
      'client certificate subjects that grant roles, such as CN=ops:write,OU=viewers:read',
    )
    .option('--max-streams <n>', 'maximum open snapshot streams', String(DEFAULT_MAX_STREAMS))
    .option(
      '--stream-admission-rate <n>',
      'new snapshot streams admitted per second',
      String(DEFAULT_ADMISSION_RATE),
    )
    .option(
      '--max-message-bytes <n>',
      'largest request message accepted, in bytes (default 256 MiB)',
    )
    .option(
      '--connection-idle-timeout <duration>',
      'time a gRPC connection with no open stream stays open, such as 60s; 0 keeps it open',
      '60s',
    )
    .option('--etcd-ca <file>', 'PEM CA that verifies etcd')
    .option('--etcd-cert <file>', 'PEM client certificate for etcd')
    .option('--etcd-key <file>', 'PEM private key of --etcd-cert')
    .option('--etcd-user <name>', 'etcd user, when etcd has authentication enabled')
    .option(
      '--etcd-password <password>',
      'password of --etcd-user (prefer env LOOM_ETCD_PASSWORD)',
    );
}

/** Adds the proxy's TLS, token, drain and snapshot-cache flags to `command`. */
export function addDataPlaneLifecycleOptions(command: Command): Command {
  return command
    .option('--tls-ca <file>', 'PEM CA that verifies the control plane; turns on TLS')
    .option('--tls-cert <file>', 'PEM client certificate for mutual TLS')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--tls-server-name <name>',
      "name to expect in the control plane's certificate instead of the host of " +
        '--control-plane, such as a Service name reached through a tunnel',
    )
    .option('--token <token>', 'proxy token for the control plane (prefer env LOOM_PROXY_TOKEN)')
    .option(
      '--drain-timeout <duration>',
      'time in-flight requests get on SIGTERM, such as 30s; 0 closes their connections at once',
      '30s',
    )
    .option(
      '--drain-idle-grace <duration>',
      'time idle keep-alive connections stay open on SIGTERM, such as 1s; 0 closes them at once',
      '1s',
    )
    .option(
      '--drain-accept-grace <duration>',
      'time the listener keeps accepting on SIGTERM while readiness is already false, so ' +
        'load balancers stop sending first, such as 5s; 0 closes it at once',
      '0s',
    )
    .option('--snapshot-cache <file>', 'keep the last applied snapshot here and serve it at start')
    .option(
      '--snapshot-cache-max-age <duration>',
      'oldest cached snapshot served at start, such as 24h',
      '24h',
    )
    .option(
      '--control-plane-timeout <duration>',
      'time a control plane gets to open a snapshot stream before the next address is tried; ' +
        '0 waits without limit',
      '10s',
    );
}

/**
 * Converts control-plane flags into options.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag with an invalid value.
 */
export function controlPlaneSecurity(
  flags: ControlPlaneSecurityFlags,
): Partial<ControlPlaneOptions> {
  const password = flags.etcdPassword ?? process.env.LOOM_ETCD_PASSWORD;
  if (flags.etcdUser !== undefined && password === undefined) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      '--etcd-user needs a password: set LOOM_ETCD_PASSWORD or --etcd-password',
    );
  }
  const etcdTlsSet = [flags.etcdCa, flags.etcdCert, flags.etcdKey].some((f) => f !== undefined);
  return {
    tls: serverTls(flags),
    // Read at start by `checkReadable`: a missing file is a failure to start, not a usage error.
    tokensFile: flags.adminTokensFile,
    certificateRoles:
      flags.adminCertRoles === undefined ? undefined : parseCertificateRoles(flags.adminCertRoles),
    maxStreams: parsePositive(flags.maxStreams, '--max-streams'),
    streamAdmissionRate: parsePositive(flags.streamAdmissionRate, '--stream-admission-rate'),
    maxReceiveMessageBytes:
      flags.maxMessageBytes === undefined
        ? undefined
        : parsePositive(flags.maxMessageBytes, '--max-message-bytes'),
    connectionIdleTimeoutMs: parseFlagDuration(
      flags.connectionIdleTimeout,
      '--connection-idle-timeout',
      { zero: 'keep such connections open' },
    ),
    etcdTls: etcdTlsSet
      ? { ca: flags.etcdCa, cert: flags.etcdCert, key: flags.etcdKey }
      : undefined,
    etcdAuth:
      flags.etcdUser === undefined ? undefined : { username: flags.etcdUser, password: password! },
  };
}

/**
 * Converts data-plane flags into options.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag with an invalid value.
 */
export function dataPlaneLifecycle(flags: DataPlaneLifecycleFlags): {
  options: Partial<DataPlaneOptions>;
  drainTimeoutMs: number;
} {
  // Every flag is checked before any error is raised, so one message names each invalid flag.
  const problems: string[] = [];
  const checked = <T>(parse: () => T, fallback: T): T => {
    try {
      return parse();
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      problems.push(error.message);
      return fallback;
    }
  };
  const durationOf = (parse: () => number): number => checked(parse, 0);
  const tls = checked<ClientTlsFiles | undefined>(() => clientTls(flags), undefined);
  const snapshotCacheMaxAgeMs = durationOf(() =>
    parseFlagDuration(flags.snapshotCacheMaxAge, '--snapshot-cache-max-age', {
      zero: 'never serve the cache',
      maxMs: Number.MAX_SAFE_INTEGER,
    }),
  );
  const controlPlaneTimeoutMs = durationOf(() =>
    parseFlagDuration(flags.controlPlaneTimeout, '--control-plane-timeout', {
      zero: 'wait without limit',
    }),
  );
  const drainTimeoutMs = durationOf(() =>
    parseFlagDuration(flags.drainTimeout, '--drain-timeout', {
      zero: 'close their connections at once',
    }),
  );
  const drainIdleGraceMs = durationOf(() =>
    parseFlagDuration(flags.drainIdleGrace, '--drain-idle-grace', {
      zero: 'close idle connections at once',
    }),
  );
  const drainAcceptGraceMs = durationOf(() =>
    parseFlagDuration(flags.drainAcceptGrace, '--drain-accept-grace', {
      zero: 'stop accepting at once',
    }),
  );
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    problems.push(
      'a TLS client certificate needs both --tls-cert and --tls-key; set both or neither',
    );
  }
  const token = flags.token ?? (process.env.LOOM_PROXY_TOKEN || undefined);
  if (token !== undefined && !isSendableToken(token)) {
    problems.push(
      describeUnsendableToken(flags.token === undefined ? 'LOOM_PROXY_TOKEN' : '--token'),
    );
  }
  if (problems.length > 0) {
    throw new LoomError('LOOM_INVALID_ARGUMENT', problems.join('\n'));
  }
  return {
    options: {
      tls,
      token,
      snapshotCache: flags.snapshotCache,
      snapshotCacheMaxAgeMs,
      controlPlaneTimeoutMs,
      drainGrace: { idleMs: drainIdleGraceMs, acceptMs: drainAcceptGraceMs },
    },
    drainTimeoutMs,
  };
}

/**
 * Reads a file once at start, so a wrong path fails naming the flag instead of as a stack trace.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the flag, the file and the reason.
 */
export function checkReadable(file: string | undefined, option: string): string | undefined {
  if (file === undefined) return undefined;
  try {
    readFileSync(file);
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'no such file'
        : (error as Error).message;
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `cannot read ${option} ${JSON.stringify(file)}: ${reason}; pass a readable file of ` +
        'role:token lines',
      { cause: error },
    );
  }
  return file;
}

function clientTls(flags: DataPlaneLifecycleFlags): ClientTlsFiles | undefined {
  const serverName =
    flags.tlsServerName === undefined
      ? undefined
      : parseTlsServerName(flags.tlsServerName, '--tls-server-name');
  const tlsSet = [flags.tlsCa, flags.tlsCert, flags.tlsKey].some((f) => f !== undefined);
  if (!tlsSet) {
    checkServerNameHasTls({ serverName }, '--tls-server-name');
    return undefined;
  }
  return { ca: flags.tlsCa, cert: flags.tlsCert, key: flags.tlsKey, serverName };
}

function serverTls(flags: ControlPlaneSecurityFlags): ServerTlsFiles | undefined {
  if (flags.tlsCert === undefined && flags.tlsKey === undefined) {
    if (flags.tlsClientCa !== undefined) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        '--tls-client-ca needs --tls-cert and --tls-key: mutual TLS runs on top of TLS',
      );
    }
    return undefined;
  }
  if (flags.tlsCert === undefined || flags.tlsKey === undefined) {
    throw new LoomError('LOOM_INVALID_ARGUMENT', 'TLS needs both --tls-cert and --tls-key');
  }
  return { cert: flags.tlsCert, key: flags.tlsKey, clientCa: flags.tlsClientCa };
}

function parsePositive(value: string, option: string): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${option} "${value}"; expected a positive number`,
    );
  }
  return number;
}
