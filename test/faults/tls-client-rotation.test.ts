import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { LoomError } from '../../common/errors.js';
import { loadClientTls } from '../../common/tls.js';
import { waitFor } from '../../scripts/processes.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';
import { createTestPki, type CertFiles, type TestPki } from './certs.js';
import {
  applyConfig,
  countLogLines,
  fixtureConfig,
  readyz,
  startUpstream,
  waitForVersion,
  Workspace,
  type Member,
} from './harness.js';

const WRITE_TOKEN = 'rotation-write-token-51c0';

/** Fields of a control plane's `proxy connected` line. */
interface ConnectedLine {
  proxyId: string;
  certificate?: { subject: string; fingerprint: string };
}

/** Fields of a proxy's certificate log lines. */
interface CertificateLine {
  address?: string;
  cert?: string;
  subject?: string;
  issuer?: string;
}

/** Parses the log lines of `logFile` whose message is `message`. */
function logLines<T = CertificateLine>(logFile: string, message: string): T[] {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`"msg":"${message}"`))
    .map((line) => JSON.parse(line) as T);
}

function connectedLines(logFile: string): ConnectedLine[] {
  return logLines<ConnectedLine>(logFile, 'proxy connected');
}

/**
 * Replaces `live` with `next` the way certificate tools do: each file is
 * written beside its target and renamed over it, so a reader sees the old or
 * the new file, never a partial one.
 */
function rotate(live: CertFiles, next: CertFiles): void {
  for (const [source, target] of [
    [next.cert, live.cert],
    [next.key, live.key],
  ]) {
    copyFileSync(source, `${target}.next`);
    renameSync(`${target}.next`, target);
  }
}

describe('proxy client certificate rotation', { timeout: 120_000 }, () => {
  let pki: TestPki;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cpPort: number;
  let cpArgs: string[];
  let cp: Member;
  let proxy: Member;
  let live: CertFiles;
  let restarts = 0;

  /** Stops the control plane and starts it again on the same port and store. */
  const restartControlPlane = async () => {
    await cp.process.stop();
    restarts += 1;
    cp = await ws.controlPlane(`cp-${restarts}`, cpArgs, cpPort);
  };

  before(async () => {
    pki = createTestPki();
    upstream = await startUpstream('echo');
    ws = new Workspace();
    const tokens = join(ws.dir, 'tokens');
    writeFileSync(tokens, `write:${WRITE_TOKEN}\n`);
    cpPort = await findFreePort();
    cpArgs = [
      '--data-dir',
      join(ws.dir, 'store'),
      '--tls-cert',
      pki.server.cert,
      '--tls-key',
      pki.server.key,
      '--tls-client-ca',
      pki.ca,
      '--admin-tokens-file',
      tokens,
    ];
    cp = await ws.controlPlane('cp-0', cpArgs, cpPort);
    live = { cert: join(ws.dir, 'proxy.pem'), key: join(ws.dir, 'proxy.key') };
    copyFileSync(pki.proxy.cert, live.cert);
    copyFileSync(pki.proxy.key, live.key);
    proxy = await ws.proxy(
      'proxy-1',
      [cp.address],
      ['--tls-ca', pki.ca, '--tls-cert', live.cert, '--tls-key', live.key],
    );
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
    pki?.remove();
  });

  test('renewed certificate used on reconnect', async () => {
    const admin = {
      token: WRITE_TOKEN,
      tls: { ca: pki.ca, cert: pki.admin.cert, key: pki.admin.key },
    };
    const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1), admin);
    await waitForVersion(proxy.adminPort, version);
    const first = connectedLines(cp.logFile).at(-1);
    assert.equal(first?.proxyId, 'proxy-1', ws.logs());
    assert.equal(first.certificate?.subject, 'CN=proxy-1,OU=proxies');

    // The admin certificate comes from the same CA, so it serves as a
    // renewed proxy certificate whose subject differs from the first one.
    rotate(live, pki.admin);
    await restartControlPlane();
    await waitFor('proxy reconnected', 20_000, () => connectedLines(cp.logFile).length > 0);
    const renewed = connectedLines(cp.logFile).at(-1);
    assert.equal(renewed?.proxyId, 'proxy-1');
    assert.equal(renewed.certificate?.subject, 'CN=ops-admin,OU=operators');
    assert.notEqual(renewed.certificate.fingerprint, first.certificate.fingerprint);

    const next = await applyConfig(cp.address, fixtureConfig(upstream.port, 2), admin);
    await waitForVersion(proxy.adminPort, next);
  });

  test('half-rotated files are rejected', () => {
    const half = { ca: pki.ca, cert: pki.admin.cert, key: pki.proxy.key };
    assert.throws(
      () => loadClientTls(half),
      (error: unknown) =>
        error instanceof LoomError &&
        error.code === 'LOOM_INVALID_ARGUMENT' &&
        error.message.includes(pki.admin.cert) &&
        error.message.includes(pki.proxy.key),
    );
    const whole = loadClientTls({ ca: pki.ca, ...pki.admin });
    assert.equal(whole.certificate?.subject, 'CN=ops-admin,OU=operators');
    assert.equal(whole.certificate.issuer, 'CN=ca');
  });

  test('certificate from another CA fails', async () => {
    const heldVersion = (await readyz(proxy.adminPort)).body.version ?? 0;
    assert.ok(heldVersion > 0, 'the proxy serves a version before the rotation');

    rotate(live, pki.rogue);
    await restartControlPlane();
    await waitFor('rejection logged', 30_000, () => {
      return countLogLines(proxy.logFile, 'control plane rejected the client certificate') > 0;
    });
    const rejection = logLines(proxy.logFile, 'control plane rejected the client certificate')[0];
    assert.equal(rejection.address, cp.address);
    assert.equal(rejection.subject, 'CN=proxy-1,OU=proxies');
    assert.equal(rejection.issuer, 'CN=other-ca');
    assert.equal(rejection.cert, live.cert);
    assert.equal(connectedLines(cp.logFile).length, 0, ws.logs());

    // The proxy keeps serving the table it had.
    const ready = await readyz(proxy.adminPort);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.version, heldVersion);
    const response = await httpGet(`http://${proxy.address}/hold/x`);
    assert.equal(response.status, 200, response.body);

    // Each certificate the proxy read was logged once, in rotation order.
    const loaded = logLines(proxy.logFile, 'tls client certificate loaded');
    assert.deepEqual(
      loaded.map((line) => line.subject),
      ['CN=proxy-1,OU=proxies', 'CN=ops-admin,OU=operators', 'CN=proxy-1,OU=proxies'],
    );
    assert.equal(loaded[2].issuer, 'CN=other-ca');
  });
});
