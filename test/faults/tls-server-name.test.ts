// TLS server-name override of loomctl and the proxy: a control plane whose certificate names
// only a Kubernetes Service, dialed on 127.0.0.1 as through `kubectl port-forward`.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { loom, loomctl } from '../helpers/cli.js';
import { createTestPki, SERVICE_NAME, type TestPki } from './certs.js';
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

describe('tls server name', { timeout: 120_000 }, () => {
  let pki: TestPki;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cp: Member;

  before(async () => {
    pki = createTestPki();
    upstream = await startUpstream('echo');
    ws = new Workspace();
    cp = await ws.controlPlane('cp', [
      '--data-dir',
      join(ws.dir, 'store'),
      '--tls-cert',
      pki.service.cert,
      '--tls-key',
      pki.service.key,
    ]);
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
    pki?.remove();
  });

  test('loomctl without the name fails', async () => {
    const result = await loomctl(cp.address, ['--tls-ca', pki.ca, 'status']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /ERR_TLS_CERT_ALTNAME_INVALID/);
    assert.match(result.stderr, /certificate does not name the host of --control-plane/);
    assert.match(result.stderr, /pass --tls-server-name NAME/);
    assert.doesNotMatch(result.stderr, /Is "loom control-plane" running there/);
  });

  test('loomctl flag passes the check', async () => {
    const args = ['--tls-ca', pki.ca, '--tls-server-name', SERVICE_NAME, 'status', '-o', 'json'];
    const result = await loomctl(cp.address, args);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(typeof (JSON.parse(result.stdout) as { version: number }).version, 'number');
  });

  test('loomctl environment passes the check', async () => {
    process.env.LOOM_TLS_SERVER_NAME = SERVICE_NAME;
    try {
      const result = await loomctl(cp.address, ['--tls-ca', pki.ca, 'status']);
      assert.equal(result.code, 0, result.stderr);
    } finally {
      delete process.env.LOOM_TLS_SERVER_NAME;
    }
  });

  test('loomctl config file passes the check', async () => {
    const config = join(ws.dir, 'loomctl.yaml');
    writeFileSync(config, `tls: {ca: ${pki.ca}, serverName: ${SERVICE_NAME}}\n`);
    const result = await loomctl(cp.address, ['--config', config, 'status']);
    assert.equal(result.code, 0, result.stderr);
  });

  test('loomctl rejects unusable names', async () => {
    const withScheme = await loomctl(cp.address, [
      '--tls-ca',
      pki.ca,
      '--tls-server-name',
      `https://${SERVICE_NAME}:7400`,
      'status',
    ]);
    assert.equal(withScheme.code, 2);
    assert.match(
      withScheme.stderr,
      /invalid --tls-server-name "https:\/\/.*"; expected a DNS name/,
    );

    const withoutTls = await loomctl(cp.address, ['--tls-server-name', SERVICE_NAME, 'status']);
    assert.equal(withoutTls.code, 2);
    assert.match(withoutTls.stderr, /--tls-server-name needs TLS, which --tls-ca turns on/);
  });

  test('proxy connects only with the name', async () => {
    const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1), {
      tls: { ca: pki.ca, serverName: SERVICE_NAME },
    });
    const named = await ws.proxy(
      'proxy-named',
      [cp.address],
      ['--tls-ca', pki.ca, '--tls-server-name', SERVICE_NAME],
    );
    const unnamed = await ws.proxy('proxy-unnamed', [cp.address], ['--tls-ca', pki.ca]);
    await waitForVersion(named.adminPort, version);
    await waitFor('unnamed proxy retries', 15_000, () => {
      return countLogLines(unnamed.logFile, 'control plane lost, reconnecting') >= 2;
    });
    assert.equal((await readyz(unnamed.adminPort)).status, 503);
    const log = readFileSync(unnamed.logFile, 'utf8');
    assert.match(log, /ERR_TLS_CERT_ALTNAME_INVALID/);
    assert.match(log, /certificate does not name the host of 127\.0\.0\.1:\d+.*--tls-server-name/);
  });

  test('proxy rejects a name without TLS', async () => {
    const result = await loom(
      ['data-plane', '--control-plane', cp.address, '--tls-server-name', SERVICE_NAME],
      15_000,
    );
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--tls-server-name needs TLS, which --tls-ca turns on/);
  });
});
