import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A PEM certificate and its key on disk. */
export interface CertFiles {
  cert: string;
  key: string;
}

/** Test PKI: two CAs and leaf certificates, in a temporary folder. */
export interface TestPki {
  dir: string;
  ca: string;
  /** A CA that signed nothing the servers trust. */
  otherCa: string;
  /** Server certificate for 127.0.0.1 and localhost, signed by `ca`. */
  server: CertFiles;
  /** A second server certificate, for rotation tests. */
  serverRenewed: CertFiles;
  /** Server certificate for {@link SERVICE_NAME} alone, as a Kubernetes Service would get. */
  service: CertFiles;
  /** Client certificates signed by `ca`, by common name. */
  proxy: CertFiles;
  admin: CertFiles;
  /** A client certificate with CN=proxy-1 signed by `otherCa`. */
  rogue: CertFiles;
  remove(): void;
}

/** The only subjectAltName of `TestPki.service`. */
export const SERVICE_NAME = 'loom-control-plane.loom.svc';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Creates a CA, a second CA and leaf certificates with the `openssl` CLI.
 * Keys are P-256; certificates are valid for two days.
 */
export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'loom-pki-'));
  const ca = (name: string) => {
    openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '2',
        '-subj',
        `/CN=${name}`,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.pem`,
      ],
      dir,
    );
    return join(dir, `${name}.pem`);
  };
  const leaf = (
    name: string,
    signer: string,
    subject: string,
    server: boolean,
    altNames = 'IP:127.0.0.1,DNS:localhost',
  ): CertFiles => {
    const extensions = join(dir, `${name}.ext`);
    writeFileSync(
      extensions,
      server
        ? `subjectAltName=${altNames}\nextendedKeyUsage=serverAuth\n`
        : 'extendedKeyUsage=clientAuth\n',
    );
    openssl(
      [
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        subject,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.csr`,
      ],
      dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${signer}.pem`,
        '-CAkey',
        `${signer}.key`,
        '-CAcreateserial',
        '-days',
        '2',
        '-extfile',
        extensions,
        '-out',
        `${name}.pem`,
      ],
      dir,
    );
    return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  };

  const pki: TestPki = {
    dir,
    ca: ca('ca'),
    otherCa: ca('other-ca'),
    server: leaf('server', 'ca', '/CN=control-plane', true),
    serverRenewed: leaf('server-renewed', 'ca', '/CN=control-plane-renewed', true),
    service: leaf('service', 'ca', `/CN=${SERVICE_NAME}`, true, `DNS:${SERVICE_NAME}`),
    proxy: leaf('proxy', 'ca', '/CN=proxy-1/OU=proxies', false),
    admin: leaf('admin', 'ca', '/CN=ops-admin/OU=operators', false),
    rogue: leaf('rogue', 'other-ca', '/CN=proxy-1/OU=proxies', false),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
  return pki;
}
