import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

import type { PeerCertificate } from 'node:tls';

import type { Metadata } from '@grpc/grpc-js';

import { LoomError } from './errors.js';
import type { Logger } from './logger.js';

/**
 * Roles of callers. `read` may call GetConfig and Status, `write` may also call
 * Apply and Delete, and `proxy` may open the snapshot stream.
 */
export type Role = 'read' | 'write' | 'proxy';

const ROLES: readonly Role[] = ['read', 'write', 'proxy'];

/** What a call needs: an admin permission or the snapshot stream. */
export type Permission = 'read' | 'write' | 'stream';

/** The parts of a gRPC server call that carry credentials. */
export interface CallCredentials {
  metadata: Metadata;
  /** grpc-js fills `sslPeerCertificate` only for a certificate that TLS verified. */
  getAuthContext(): { sslPeerCertificate?: PeerCertificate };
}

/** Settings of an {@link Authenticator}. */
export interface AuthenticatorOptions {
  /** File of `role:token` lines; it is read again when it changes. */
  tokensFile?: string;
  /** Certificate subject fields that grant a role, such as `CN=ops-admin` → `write`. */
  certificateRoles?: CertificateRole[];
  /**
   * True when the server verifies client certificates (mutual TLS). A verified
   * certificate then admits the snapshot stream, and admin calls need a token
   * or a mapped certificate.
   */
  mutualTls?: boolean;
  logger: Logger;
}

/** One mapping from a certificate subject field to a role. */
export interface CertificateRole {
  /** Subject attribute, such as `CN` or `OU`. */
  field: string;
  value: string;
  role: Role;
}

/** How often the tokens file is checked for changes, at most, in milliseconds. */
const TOKENS_CHECK_MS = 1_000;

/**
 * Decides whether a gRPC call may proceed. Credentials are a bearer token in
 * the `authorization` metadata (`Bearer TOKEN`) or a client certificate that
 * TLS has verified. Tokens are compared by SHA-256 digest and never logged.
 *
 * Admin calls need credentials once a tokens file, certificate roles or mutual
 * TLS is configured. The snapshot stream needs them once mutual TLS is on or
 * the tokens file holds a `proxy` token.
 */
export class Authenticator {
  #tokens = new Map<string, Role>();
  #tokensStamp = '';
  #checkedAt = 0;
  readonly #options: AuthenticatorOptions;
  readonly #logger: Logger;

  /**
   * Reads the tokens file once.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the file and line of an
   *   invalid entry.
   */
  constructor(options: AuthenticatorOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'auth' });
    if (options.tokensFile !== undefined) this.#loadTokens(options.tokensFile);
  }

  /** True when admin calls need credentials. */
  get adminAuthRequired(): boolean {
    return (
      this.#options.tokensFile !== undefined ||
      (this.#options.certificateRoles?.length ?? 0) > 0 ||
      this.#options.mutualTls === true
    );
  }

  /** True when the snapshot stream needs credentials. */
  get streamAuthRequired(): boolean {
    this.#reloadTokensIfChanged();
    return this.#options.mutualTls === true || [...this.#tokens.values()].includes('proxy');
  }

  /**
   * Returns undefined when the call may proceed, otherwise the error to send:
   * `LOOM_UNAUTHENTICATED` without valid credentials, `LOOM_PERMISSION_DENIED`
   * when the caller's roles do not include the permission.
   */
  check(call: CallCredentials, permission: Permission): LoomError | undefined {
    const required = permission === 'stream' ? this.streamAuthRequired : this.adminAuthRequired;
    if (!required) return undefined;

    const header = call.metadata.get('authorization')[0];
    const roles = new Set<Role>();
    if (typeof header === 'string') {
      const role = this.#roleOfToken(header);
      if (role === undefined) {
        return new LoomError(
          'LOOM_UNAUTHENTICATED',
          'invalid token: the authorization header must be "Bearer TOKEN" with a token from the ' +
            "control plane's tokens file",
        );
      }
      roles.add(role);
    }
    const certificate = call.getAuthContext().sslPeerCertificate;
    if (certificate !== undefined) {
      for (const role of this.#rolesOfCertificate(certificate.subject)) roles.add(role);
      // A certificate verified by the client CA is how proxies authenticate.
      if (this.#options.mutualTls) roles.add('proxy');
    }

    if (roles.size === 0) {
      return new LoomError(
        'LOOM_UNAUTHENTICATED',
        permission === 'stream'
          ? 'credentials required: start the proxy with a proxy token ' +
              '(--token or LOOM_PROXY_TOKEN) or a client certificate'
          : 'credentials required: pass a token (--token or LOOM_TOKEN) or a client certificate',
      );
    }
    if (!allows(roles, permission)) {
      return new LoomError(
        'LOOM_PERMISSION_DENIED',
        `permission denied: ${permission} needs role ${requiredRole(permission)}, ` +
          `the caller has ${[...roles].sort().join(', ')}`,
      );
    }
    return undefined;
  }

  #roleOfToken(header: string): Role | undefined {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) return undefined;

    this.#reloadTokensIfChanged();
    return this.#tokens.get(digest(match[1]));
  }

  #rolesOfCertificate(subject: PeerCertificate['subject'] | undefined): Role[] {
    const roles: Role[] = [];
    for (const mapping of this.#options.certificateRoles ?? []) {
      const values = (subject as Record<string, string | string[]> | undefined)?.[mapping.field];
      const list = Array.isArray(values) ? values : values === undefined ? [] : [values];
      if (list.includes(mapping.value)) roles.push(mapping.role);
    }
    return roles;
  }

  #reloadTokensIfChanged(): void {
    const file = this.#options.tokensFile;
    const now = Date.now();
    if (file === undefined || now - this.#checkedAt < TOKENS_CHECK_MS) return;

    this.#checkedAt = now;
    try {
      if (stampOf(file) !== this.#tokensStamp) {
        this.#loadTokens(file);
        this.#logger.info({ file, tokens: this.#tokens.size }, 'tokens file reloaded');
      }
    } catch (error) {
      // The tokens already loaded stay in force until the file is valid again.
      this.#logger.warn({ file, err: error }, 'tokens file reload failed');
    }
  }

  #loadTokens(file: string): void {
    const stamp = stampOf(file);
    this.#tokens = parseTokensFile(file, readFileSync(file, 'utf8'));
    this.#tokensStamp = stamp;
  }
}

/**
 * Characters of a bearer token: visible ASCII. gRPC metadata cannot carry others, and a tokens
 * file allows no whitespace in a token.
 */
const BEARER_TOKEN = /^[\x21-\x7e]+$/;

/** Returns whether a client can send `token` as a bearer token in gRPC metadata. */
export function isSendableToken(token: string): boolean {
  return BEARER_TOKEN.test(token);
}

/**
 * Returns the message about a token from `source` that gRPC metadata cannot carry. It never
 * contains the token.
 */
export function describeUnsendableToken(source: string): string {
  return (
    `invalid token from ${source}: it contains a space, a line break or a character ` +
    'outside visible ASCII; give the token as the tokens file of the control plane has it'
  );
}

/**
 * Parses a tokens file: one `role:token` per line, roles `read`, `write` and
 * `proxy`; blank lines and lines starting with `#` are skipped. Returns a map
 * from the SHA-256 digest of each token to its role.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the line; the token itself
 *   never appears in the message.
 */
export function parseTokensFile(file: string, text: string): Map<string, Role> {
  const tokens = new Map<string, Role>();
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;

    const separator = line.indexOf(':');
    const role = line.slice(0, separator) as Role;
    const token = line.slice(separator + 1).trim();
    if (separator <= 0 || !ROLES.includes(role) || token === '' || /\s/.test(token)) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid tokens file ${file}:${index + 1}: expected "role:token" with role ` +
          `${ROLES.join(', ')} and a token without spaces`,
      );
    }
    tokens.set(digest(token), role);
  }
  return tokens;
}

/**
 * Parses certificate role mappings such as `CN=ops-admin:write,OU=viewers:read`.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the entry that is not
 *   `FIELD=VALUE:ROLE`.
 */
export function parseCertificateRoles(spec: string): CertificateRole[] {
  return spec
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const match = /^([A-Za-z]+)=(.+):([a-z]+)$/.exec(entry);
      if (!match || !ROLES.includes(match[3] as Role)) {
        throw new LoomError(
          'LOOM_INVALID_ARGUMENT',
          `invalid certificate role "${entry}"; expected FIELD=VALUE:ROLE such as ` +
            `CN=ops-admin:write, with role ${ROLES.join(', ')}`,
        );
      }
      return { field: match[1], value: match[2], role: match[3] as Role };
    });
}

function allows(roles: Set<Role>, permission: Permission): boolean {
  if (permission === 'stream') return roles.has('proxy');
  if (permission === 'write') return roles.has('write');
  return roles.has('read') || roles.has('write');
}

function requiredRole(permission: Permission): string {
  return permission === 'stream' ? 'proxy' : permission === 'write' ? 'write' : 'read or write';
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function stampOf(file: string): string {
  const stats = statSync(file);
  return `${stats.mtimeMs}:${stats.size}`;
}
