import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Socket } from 'node:net';
import {
  checkServerIdentity,
  connect as connectTls,
  createSecureContext,
  type PeerCertificate,
  type SecureContext,
} from 'node:tls';

import {
  CallCredentials,
  ChannelCredentials,
  credentials,
  experimental,
  ServerCredentials,
  type ChannelOptions,
} from '@grpc/grpc-js';

import { LoomError } from './errors.js';
import type { Logger } from './logger.js';

type CertificateProvider = experimental.CertificateProvider;
type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** How often certificate files are checked for changes, in milliseconds. */
export const DEFAULT_TLS_RELOAD_MS = 5_000;

/** TLS files of a gRPC server, all PEM. */
export interface ServerTlsFiles {
  cert: string;
  key: string;
  /** CA bundle that verifies client certificates; setting it turns on mutual TLS. */
  clientCa?: string;
}

/** TLS settings of a gRPC client: PEM files and the expected server name. */
export interface ClientTlsFiles {
  /** CA bundle that verifies the server; without it the system roots are used. */
  ca?: string;
  /** Client certificate and key, for mutual TLS; both or neither. */
  cert?: string;
  key?: string;
  /**
   * Name the server certificate must carry, sent as SNI and as the HTTP/2 authority, in place
   * of the host of the dialed address, such as the Service name behind `kubectl port-forward`.
   */
  serverName?: string;
}

/**
 * Returns the grpc-js channel options that make a TLS client check `tls.serverName` instead
 * of the dialed host; empty without a server name.
 */
export function serverNameChannelOptions(tls: ClientTlsFiles | undefined): ChannelOptions {
  if (tls?.serverName === undefined) return {};
  return {
    'grpc.ssl_target_name_override': tls.serverName,
    'grpc.default_authority': tls.serverName,
  };
}

/**
 * Checks a TLS server name from `option`: a DNS name or an IP address, without a port or a
 * scheme.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the option, the value and the expected form.
 */
export function parseTlsServerName(value: string, option: string): string {
  const name = value.trim();
  const label = '[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?';
  const dnsName = new RegExp(`^${label}(\\.${label})*$`);
  if (isIP(name) === 0 && (name.length > 253 || !dnsName.test(name))) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${option} ${JSON.stringify(value)}; expected a DNS name or IP address that the ` +
        "control plane's certificate carries, such as loom-control-plane.loom.svc, " +
        'without a port or scheme',
    );
  }
  return name;
}

/**
 * Rejects a TLS server name without TLS: only `--tls-ca`, `--tls-cert` or `--tls-key` turn TLS
 * on, and a plaintext connection checks no name.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming `option`.
 */
export function checkServerNameHasTls(tls: ClientTlsFiles | undefined, option: string): void {
  if (tls?.serverName === undefined) return;
  if ([tls.ca, tls.cert, tls.key].some((file) => file !== undefined)) return;
  throw new LoomError(
    'LOOM_INVALID_ARGUMENT',
    `${option} needs TLS, which --tls-ca turns on; pass --tls-ca with the CA that signed ` +
      "the control plane's certificate",
  );
}

interface LoadedFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
  /** mtime and size of every file, to notice a change without reading it. */
  stamp: string;
}

/**
 * A certificate provider for grpc-js servers that re-reads its files when their
 * modification time or size changes. A new set is put in service only after
 * `tls.createSecureContext` accepts it, so a half-written file during rotation
 * keeps the previous certificates in service instead of dropping connections.
 * Connections already open keep the certificates of their handshake.
 */
export class CertificateReloader implements CertificateProvider {
  #current: LoadedFiles;
  readonly #files: ServerTlsFiles;
  readonly #logger: Logger;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #timer: NodeJS.Timeout;

  /**
   * Reads and checks the files once, then checks them every `intervalMs`.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the files when one is
   *   missing, unreadable, or not a matching PEM certificate and key.
   */
  constructor(files: ServerTlsFiles, logger: Logger, intervalMs = DEFAULT_TLS_RELOAD_MS) {
    this.#files = files;
    this.#logger = logger.child({ component: 'tls' });
    this.#current = loadServerFiles(files);
    this.#timer = setInterval(() => this.#reloadIfChanged(), intervalMs);
    this.#timer.unref();
  }

  /** Stops checking the files. */
  close(): void {
    clearInterval(this.#timer);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    // grpc-js registers its own watcher after adding this listener, so an update
    // sent synchronously here would never reach the server.
    setImmediate(() => listener(this.#caUpdate()));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    setImmediate(() => listener(this.#identityUpdate()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  #caUpdate(): experimental.CaCertificateUpdate | null {
    return this.#current.ca ? { caCertificate: this.#current.ca } : null;
  }

  #identityUpdate(): experimental.IdentityCertificateUpdate {
    return { certificate: this.#current.cert, privateKey: this.#current.key };
  }

  #reloadIfChanged(): void {
    let next: LoadedFiles;
    try {
      if (fileStamp(this.#files) === this.#current.stamp) return;
      next = loadServerFiles(this.#files);
    } catch (error) {
      this.#logger.warn({ err: error }, 'tls certificate reload failed');
      return;
    }

    this.#current = next;
    this.#logger.info({ cert: this.#files.cert }, 'tls certificates reloaded');
    for (const listener of this.#identityListeners) listener(this.#identityUpdate());
    for (const listener of this.#caListeners) listener(this.#caUpdate());
  }
}

/** Server credentials and the reloader behind them; call `close()` when the server stops. */
export interface ReloadingServerCredentials {
  credentials: ServerCredentials;
  close(): void;
}

/**
 * Creates server credentials whose certificates follow their files. With
 * `clientCa`, every client must present a certificate signed by it (mutual
 * TLS); the handshake fails otherwise.
 */
export function createServerTlsCredentials(
  files: ServerTlsFiles,
  logger: Logger,
  intervalMs = DEFAULT_TLS_RELOAD_MS,
): ReloadingServerCredentials {
  const reloader = new CertificateReloader(files, logger, intervalMs);
  // NOTE: grpc-js 1.14 passes this function's first argument to the
  // credentials as the identity provider and its second as the CA provider,
  // the reverse of the declared parameter names. The reloader serves both, and
  // the second argument is null only when there is no client CA.
  const mutual = files.clientCa !== undefined;
  const serverCredentials = experimental.createCertificateProviderServerCredentials(
    reloader,
    mutual ? reloader : null,
    mutual,
  );
  return { credentials: serverCredentials, close: () => reloader.close() };
}

/**
 * Creates channel credentials from files read now. Clients call it for every
 * new connection, so renewed files are picked up at the next reconnect.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the file that cannot be read,
 *   or both files when the key does not match the certificate.
 */
export function createClientTlsCredentials(files: ClientTlsFiles): ChannelCredentials {
  return loadClientTls(files).credentials;
}

/** Channel credentials and the client certificate they present. */
export interface ClientTls {
  credentials: ChannelCredentials;
  /** The client certificate, when the files include one. */
  certificate: CertificateSummary | undefined;
}

/**
 * Reads the files once and returns the channel credentials with a summary of
 * the client certificate, so that a caller can log which certificate a new
 * connection presents.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the file that cannot be read,
 *   or both files when the key does not match the certificate.
 */
export function loadClientTls(files: ClientTlsFiles): ClientTls {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      'a TLS client certificate needs both --tls-cert and --tls-key; set both or neither',
    );
  }

  const ca = files.ca === undefined ? null : readPem(files.ca, '--tls-ca');
  const key = files.key === undefined ? null : readPem(files.key, '--tls-key');
  const cert = files.cert === undefined ? null : readPem(files.cert, '--tls-cert');
  try {
    // The secure context is built here, so a key that does not match the certificate (one
    // file renamed, the other not yet) fails now, not at connect. The options are those of
    // grpc-js's `credentials.createSsl`, whose environment variables keep working.
    const context = createSecureContext({
      ca: ca ?? defaultRootCertificates() ?? undefined,
      key: key ?? undefined,
      cert: cert ?? undefined,
      ciphers: process.env.GRPC_SSL_CIPHER_SUITES,
    });
    const channel = new ClientTlsCredentials(context);
    return { credentials: channel, certificate: cert === null ? undefined : summarizePem(cert) };
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid TLS client files (ca ${files.ca ?? '-'}, cert ${files.cert ?? '-'}, ` +
        `key ${files.key ?? '-'}): ${detail}; use PEM files and a key that matches the certificate`,
      { cause: error },
    );
  }
}

/** Contents of the file that GRPC_DEFAULT_SSL_ROOTS_FILE_PATH names, as grpc-js reads it. */
function defaultRootCertificates(): Buffer | null {
  const file = process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH;
  return file === undefined || file === '' ? null : readFileSync(file);
}

/**
 * TLS channel credentials of grpc-js that send the server name as SNI only when it is a DNS
 * name. `credentials.createSsl` of grpc-js 1.14.7 sends the dialed host as SNI also when it is
 * an IP address, which RFC 6066 section 3 forbids and for which Node.js prints warning
 * DEP0123. The certificate is checked as before: against `grpc.ssl_target_name_override` when
 * the channel sets it, else against the dialed host, IP address or name.
 */
// NOTE: grpc-js 1.14 calls `_createSecureConnector` to get a connection's TLS setup from the
// credentials. Only its `SecureConnector` type is exported (under `experimental`), so a grpc-js
// upgrade may change it.
class ClientTlsCredentials extends ChannelCredentials {
  readonly #context: SecureContext;

  constructor(context: SecureContext) {
    super();
    this.#context = context;
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(
    target: experimental.GrpcUri,
    options: ChannelOptions,
    callCredentials?: CallCredentials,
  ): experimental.SecureConnector {
    const host = experimental.splitHostPort(target.path)?.host ?? target.path;
    const override: unknown = options['grpc.ssl_target_name_override'];
    const serverName = typeof override === 'string' && override !== '' ? override : host;
    const calls = callCredentials ?? CallCredentials.createEmpty();
    return {
      connect: (socket) => connectWithTls(socket, this.#context, serverName),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => calls,
      destroy: () => undefined,
    };
  }
}

/**
 * Runs the TLS handshake on a connected socket, offering HTTP/2, and resolves once the server
 * certificate is verified for `serverName`.
 */
function connectWithTls(
  socket: Socket,
  context: SecureContext,
  serverName: string,
): Promise<experimental.SecureConnectResult> {
  return new Promise((resolve, reject) => {
    const tlsSocket = connectTls(
      {
        socket,
        secureContext: context,
        servername: isIP(serverName) === 0 ? serverName : undefined,
        checkServerIdentity: (_host, certificate) => checkServerIdentity(serverName, certificate),
        ALPNProtocols: ['h2'],
      },
      () => {
        if (!tlsSocket.authorized) {
          reject(tlsSocket.authorizationError);
          return;
        }
        resolve({ socket: tlsSocket, secure: true });
      },
    );
    tlsSocket.on('error', reject);
  });
}

/** Subject, issuer and SHA-256 fingerprint of a certificate, for log lines. */
export interface CertificateSummary {
  /** Subject attributes in `CN=proxy-1,OU=proxies` form. */
  subject: string;
  /** Issuer attributes in the same form as `subject`. */
  issuer: string;
  fingerprint: string;
  /** End of validity, as OpenSSL prints it. */
  validTo: string;
}

/**
 * Summarises the certificate a peer presented, or returns undefined when it
 * presented none; grpc-js sets `sslPeerCertificate` only on verified TLS.
 */
export function summarizeCertificate(
  certificate: PeerCertificate | undefined,
): CertificateSummary | undefined {
  if (certificate?.subject === undefined) return undefined;

  return {
    subject: formatName(certificate.subject),
    issuer: formatName(certificate.issuer),
    fingerprint: certificate.fingerprint256,
    validTo: certificate.valid_to,
  };
}

function formatName(name: PeerCertificate['subject'] | undefined): string {
  return Object.entries(name ?? {})
    .map(([field, value]) => `${field}=${Array.isArray(value) ? value.join('+') : value}`)
    .join(',');
}

/** Summarises the first certificate of a PEM chain. */
function summarizePem(pem: Buffer): CertificateSummary {
  const certificate = new X509Certificate(pem);
  // X509Certificate separates attributes with newlines, in the same order as PeerCertificate.
  return {
    subject: certificate.subject.split('\n').join(','),
    issuer: certificate.issuer.split('\n').join(','),
    fingerprint: certificate.fingerprint256,
    validTo: certificate.validTo,
  };
}

/** Returns channel credentials for `files`, or insecure ones when TLS is off. */
export function clientCredentials(files: ClientTlsFiles | undefined): ChannelCredentials {
  return files === undefined ? credentials.createInsecure() : createClientTlsCredentials(files);
}

function loadServerFiles(files: ServerTlsFiles): LoadedFiles {
  const stamp = fileStamp(files);
  const cert = readPem(files.cert, '--tls-cert');
  const key = readPem(files.key, '--tls-key');
  const ca = files.clientCa === undefined ? undefined : readPem(files.clientCa, '--tls-client-ca');
  try {
    createSecureContext({ cert, key, ca });
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid TLS files (cert ${files.cert}, key ${files.key}): ${detail}; ` +
        'use a PEM certificate and its matching private key',
      { cause: error },
    );
  }
  return { cert, key, ca, stamp };
}

function fileStamp(files: ServerTlsFiles): string {
  return [files.cert, files.key, files.clientCa]
    .filter((file): file is string => file !== undefined)
    .map((file) => {
      const stats = statSync(file);
      return `${stats.mtimeMs}:${stats.size}`;
    })
    .join('|');
}

function readPem(file: string, option: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : error;
    throw new LoomError('LOOM_INVALID_ARGUMENT', `cannot read ${option} file ${file}: ${reason}`, {
      cause: error,
    });
  }
}
