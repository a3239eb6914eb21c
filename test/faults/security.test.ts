import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';

import { Server } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';

import { REDACTED_PATHS } from '../../common/logger.js';
import { createServerTlsCredentials } from '../../common/tls.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { findFreePort } from '../helpers/ports.js';
import { createTestPki, type TestPki } from './certs.js';
import {
  applyConfig,
  countLogLines,
  fixtureConfig,
  readyz,
  startUpstream,
  waitForVersion,
  Workspace,
} from './harness.js';

const READ_TOKEN = 'read-token-7f3a9c';
const WRITE_TOKEN = 'write-token-b81d22';

/** Returns the subject CN of the certificate a TLS server presents. */
async function presentedCommonName(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      { host: '127.0.0.1', port, ca: readFileSync(ca), ALPNProtocols: ['h2'] },
      () => {
        const subject = socket.getPeerCertificate().subject;
        socket.destroy();
        resolve(String(subject.CN));
      },
    );
    socket.on('error', reject);
  });
}

describe('security', { timeout: 120_000 }, () => {
  let pki: TestPki;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;

  before(async () => {
    pki = createTestPki();
    upstream = await startUpstream('echo');
  });

  after(() => {
    upstream.server.close();
    pki.remove();
  });

  test('mutual TLS rejects intruders', async () => {
    const ws = new Workspace();
    try {
      const tokens = join(ws.dir, 'tokens');
      writeFileSync(tokens, `# operators\nread:${READ_TOKEN}\nwrite:${WRITE_TOKEN}\n`);
      const cp = await ws.controlPlane('cp', [
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
        '--admin-cert-roles',
        'CN=ops-admin:write',
      ]);
      const tls = (files: { cert: string; key: string }) => [
        '--tls-ca',
        pki.ca,
        '--tls-cert',
        files.cert,
        '--tls-key',
        files.key,
      ];

      // loomctl: a valid client certificate alone grants no admin role.
      const anonymous = await loomctl(cp.address, [...tls(pki.proxy), 'get']);
      assert.equal(anonymous.code, 1);
      assert.match(anonymous.stderr, /permission denied: read needs role read or write/);
      const certless = await loomctl(cp.address, [
        '--tls-ca',
        pki.ca,
        '--token',
        READ_TOKEN,
        'get',
      ]);
      assert.equal(certless.code, 1, certless.stderr);
      assert.match(certless.stderr, /requires a client certificate \(mutual TLS\)/);
      assert.match(certless.stderr, /Pass --tls-cert FILE and --tls-key FILE, or set tls\.cert/);
      assert.doesNotMatch(certless.stderr, /Is "loom control-plane" running there/);
      const reader = await loomctl(cp.address, [...tls(pki.proxy), '--token', READ_TOKEN, 'get']);
      assert.equal(reader.code, 0, reader.stderr);
      // RFC 6066 forbids an IP address as SNI, and Node.js warns with DEP0123 when given one.
      assert.doesNotMatch(reader.stderr, /DEP0123/);
      const configFile = join(ws.dir, 'loom.yaml');
      writeFileSync(
        configFile,
        `upstreams:\n  - name: echo\n    targets: [{url: 'http://127.0.0.1:${upstream.port}'}]\n` +
          `routes:\n  - {name: hold, paths: ['/hold/*rest'], upstream: echo}\n`,
      );
      const denied = await loomctl(cp.address, [
        ...tls(pki.proxy),
        '--token',
        READ_TOKEN,
        'apply',
        '-f',
        configFile,
      ]);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /permission denied/);
      // The admin certificate maps to the write role.
      const applied = await loomctl(cp.address, [...tls(pki.admin), 'apply', '-f', configFile]);
      assert.equal(applied.code, 0, applied.stderr);

      // A loomctl config file supplies the token and the TLS files.
      const loomctlConfig = join(ws.dir, 'loomctl.yaml');
      writeFileSync(
        loomctlConfig,
        `controlPlane: ${cp.address}\ntoken: ${WRITE_TOKEN}\n` +
          `tls: {ca: ${pki.ca}, cert: ${pki.proxy.cert}, key: ${pki.proxy.key}}\n`,
      );
      const fromConfig = await loomctl(cp.address, ['--config', loomctlConfig, 'status']);
      assert.equal(fromConfig.code, 0, fromConfig.stderr);

      const good = await ws.proxy('proxy-good', [cp.address], tls(pki.proxy));
      const rogue = await ws.proxy('proxy-rogue', [cp.address], tls(pki.rogue));
      const plain = await ws.proxy('proxy-no-cert', [cp.address], ['--tls-ca', pki.ca]);
      await waitFor('good proxy ready', 15_000, async () => {
        return (await readyz(good.adminPort)).status === 200;
      });
      await waitFor('rogue proxy retries', 15_000, () => {
        return countLogLines(rogue.logFile, 'control plane lost, reconnecting') >= 2;
      });
      await waitFor('certless proxy retries', 15_000, () => {
        return countLogLines(plain.logFile, 'control plane lost, reconnecting') >= 2;
      });
      assert.equal((await readyz(rogue.adminPort)).status, 503);
      assert.equal((await readyz(plain.adminPort)).status, 503);
      assert.equal(countLogLines(rogue.logFile, 'control plane connected'), 0);

      for (const member of ws.members) {
        const log = readFileSync(member.logFile, 'utf8');
        assert.ok(
          !log.includes(READ_TOKEN) && !log.includes(WRITE_TOKEN),
          `${member.name} logged a token`,
        );
        assert.doesNotMatch(log, /DEP0123/, `${member.name} sent an IP address as SNI`);
      }
    } finally {
      await ws.close();
    }
  });

  test('proxy token admits the stream', async () => {
    const ws = new Workspace();
    try {
      const tokens = join(ws.dir, 'tokens');
      writeFileSync(tokens, `proxy:proxy-secret-1\nwrite:${WRITE_TOKEN}\n`);
      const cp = await ws.controlPlane('cp', [
        '--data-dir',
        join(ws.dir, 'store'),
        '--admin-tokens-file',
        tokens,
      ]);
      const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1), {
        token: WRITE_TOKEN,
      });
      const withToken = await ws.proxy('proxy-token', [cp.address], ['--token', 'proxy-secret-1']);
      const without = await ws.proxy('proxy-anonymous', [cp.address]);
      await waitForVersion(withToken.adminPort, version);
      await waitFor('anonymous proxy refused', 15_000, () => {
        return countLogLines(without.logFile, 'control plane lost, reconnecting') >= 2;
      });
      assert.equal((await readyz(without.adminPort)).status, 503);
      await assert.rejects(applyConfig(cp.address, fixtureConfig(upstream.port, 2)), /credentials/);
    } finally {
      await ws.close();
    }
  });

  test('rotated server certificate is served', async () => {
    const dir = createTestPki();
    const cert = join(dir.dir, 'live.pem');
    const key = join(dir.dir, 'live.key');
    copyFileSync(dir.server.cert, cert);
    copyFileSync(dir.server.key, key);
    const tls = createServerTlsCredentials({ cert, key }, pino({ enabled: false }), 100);
    const server = new Server();
    try {
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync('127.0.0.1:0', tls.credentials, (error, bound) =>
          error ? reject(error) : resolve(bound),
        ),
      );
      await waitFor('first certificate', 5_000, async () => {
        return (await presentedCommonName(port, dir.ca).catch(() => '')) === 'control-plane';
      });

      // A half-written key keeps the old certificates in service.
      writeFileSync(key, 'not a key');
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await presentedCommonName(port, dir.ca), 'control-plane');

      copyFileSync(dir.serverRenewed.cert, cert);
      copyFileSync(dir.serverRenewed.key, key);
      await waitFor('renewed certificate', 5_000, async () => {
        return (await presentedCommonName(port, dir.ca)) === 'control-plane-renewed';
      });
    } finally {
      server.forceShutdown();
      tls.close();
      dir.remove();
    }
  });

  test('etcd password authentication', async () => {
    const etcd: EtcdProcess = await startEtcd();
    const ws = new Workspace();
    try {
      const admin = new Etcd3({ hosts: [etcd.endpoint] });
      await admin.user('root').create('etcd-root-pw');
      await admin.user('root').addRole('root');
      await admin.auth.authEnable();
      admin.close();

      // The child process reads the password from its environment, as operators should pass it.
      process.env.LOOM_ETCD_PASSWORD = 'etcd-root-pw';
      const cp = await ws
        .controlPlane('cp', ['--etcd', etcd.endpoint, '--etcd-user', 'root'])
        .finally(() => delete process.env.LOOM_ETCD_PASSWORD);
      const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1));
      assert.ok(version > 0);
      assert.ok(!readFileSync(cp.logFile, 'utf8').includes('etcd-root-pw'));

      const anonymous = await ws.controlPlane('cp-anonymous', ['--etcd', etcd.endpoint]);
      await assert.rejects(applyConfig(anonymous.address, fixtureConfig(upstream.port, 2)));
    } finally {
      await ws.close();
      await etcd.stop();
    }
  });

  test('etcd over mutual TLS', async () => {
    const etcd = await startTlsEtcd(pki);
    const ws = new Workspace();
    try {
      const tlsArgs = [
        '--etcd-ca',
        pki.ca,
        '--etcd-cert',
        pki.proxy.cert,
        '--etcd-key',
        pki.proxy.key,
      ];
      const cp = await ws.controlPlane('cp', ['--etcd', etcd.endpoint, ...tlsArgs]);
      const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1));
      assert.ok(version > 0);

      const certless = await ws.controlPlane('cp-no-cert', [
        '--etcd',
        etcd.endpoint,
        '--etcd-ca',
        pki.ca,
      ]);
      await assert.rejects(applyConfig(certless.address, fixtureConfig(upstream.port, 2)));
    } finally {
      await ws.close();
      await etcd.stop();
    }
  });

  test('logger redacts secrets', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, sink);
    logger.info(
      {
        token: 's1',
        password: 's2',
        etcdAuth: { username: 'root', password: 's3' },
        options: { token: 's4', etcdPassword: 's5' },
        req: { headers: { authorization: 'Bearer s6', cookie: 's7' } },
        metadata: { authorization: 'Bearer s8' },
      },
      'with secrets',
    );
    const output = lines.join('');
    for (const secret of ['s1', 's2', 's3', 's4', 's5', 's6', 's7', 's8']) {
      assert.ok(!output.includes(`"${secret}"`), `${secret} was logged`);
      assert.ok(!output.includes(`${secret}"`), `${secret} was logged inside a string`);
    }
    assert.match(output, /"username":"root"/);
  });
});

/**
 * Starts etcd with TLS on its client port and client certificates required,
 * signed by the test CA; resolves once a TLS client can read from it.
 */
async function startTlsEtcd(pki: TestPki): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'loom-etcd-tls-'));
  const [client, peer] = [await findFreePort(), await findFreePort()];
  const endpoint = `https://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const child = spawn(
    'etcd',
    [
      '--name=tls',
      `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=tls=${peerUrl}`,
      `--cert-file=${pki.server.cert}`,
      `--key-file=${pki.server.key}`,
      `--trusted-ca-file=${pki.ca}`,
      '--client-cert-auth',
      '--heartbeat-interval=10',
      '--election-timeout=100',
    ],
    { stdio: 'ignore' },
  );
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const probe = new Etcd3({
    hosts: [endpoint],
    credentials: {
      rootCertificate: readFileSync(pki.ca),
      certChain: readFileSync(pki.proxy.cert),
      privateKey: readFileSync(pki.proxy.key),
    },
    defaultCallOptions: () => ({ deadline: Date.now() + 500 }),
  });
  try {
    await waitFor('etcd with TLS', 10_000, async () => {
      await probe.get('probe');
      return true;
    });
  } catch (error) {
    await stop();
    throw error;
  } finally {
    probe.close();
  }
  return { endpoint, stop };
}
