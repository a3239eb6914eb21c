import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import { pino } from 'pino';

import {
  Authenticator,
  parseCertificateRoles,
  parseTokensFile,
  type CallCredentials,
} from '../../common/auth.js';
import { LoomError } from '../../common/errors.js';
import { loadLoomctlConfig } from '../../cli/loomctl-config.js';
import { StreamAdmission } from '../../control-plane/stream/admission.js';

const logger = pino({ enabled: false });

/** Builds a call with `token` and a verified certificate with `subject`, when given. */
function call(token?: string, subject?: Record<string, string>): CallCredentials {
  const metadata = new Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  return {
    metadata,
    getAuthContext: () =>
      subject === undefined ? {} : ({ sslPeerCertificate: { subject } } as never),
  };
}

/** Builds a stand-in for a server stream that records the status it ended with. */
function fakeStream(): ServerDuplexStream<unknown, unknown> & { ended?: { code: number } } {
  const stream = new EventEmitter() as EventEmitter & { ended?: { code: number } };
  stream.on('error', (error: { code: number }) => (stream.ended = error));
  Object.assign(stream, { metadata: new Metadata(), getAuthContext: () => ({}) });
  return stream as unknown as ServerDuplexStream<unknown, unknown> & { ended?: { code: number } };
}

describe('credentials', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'loom-credentials-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('tokens file parses roles', () => {
    const tokens = parseTokensFile('t', '# comment\n\nread:abc\nwrite: def \nproxy:ghi\n');
    assert.equal(tokens.size, 3);
    assert.ok(![...tokens.keys()].includes('abc'), 'tokens are kept as digests');
  });

  test('tokens file rejects bad lines', () => {
    for (const text of ['admin:abc', 'read:', 'read:a b', 'justatoken']) {
      assert.throws(
        () => parseTokensFile('tokens.txt', `read:ok\n${text}\n`),
        (error: LoomError) => {
          assert.equal(error.code, 'LOOM_INVALID_ARGUMENT');
          assert.match(error.message, /tokens\.txt:2/);
          assert.ok(!error.message.includes('abc'), 'the message repeats the token');
          return true;
        },
      );
    }
  });

  test('certificate roles parse', () => {
    assert.deepEqual(parseCertificateRoles('CN=ops:write, OU=viewers:read'), [
      { field: 'CN', value: 'ops', role: 'write' },
      { field: 'OU', value: 'viewers', role: 'read' },
    ]);
    assert.throws(() => parseCertificateRoles('CN=ops:admin'), /expected FIELD=VALUE:ROLE/);
  });

  test('authenticator checks roles', () => {
    const file = join(dir, 'tokens');
    writeFileSync(file, 'read:r1\nwrite:w1\nproxy:p1\n');
    const auth = new Authenticator({
      tokensFile: file,
      certificateRoles: [{ field: 'CN', value: 'ops', role: 'write' }],
      logger,
    });
    assert.equal(auth.check(call('r1'), 'read'), undefined);
    assert.equal(auth.check(call('r1'), 'write')?.code, 'LOOM_PERMISSION_DENIED');
    assert.equal(auth.check(call('w1'), 'write'), undefined);
    assert.equal(auth.check(call('w1'), 'read'), undefined);
    assert.equal(auth.check(call('p1'), 'stream'), undefined);
    assert.equal(auth.check(call('p1'), 'read')?.code, 'LOOM_PERMISSION_DENIED');
    assert.equal(auth.check(call('nope'), 'read')?.code, 'LOOM_UNAUTHENTICATED');
    assert.equal(auth.check(call(), 'read')?.code, 'LOOM_UNAUTHENTICATED');
    assert.equal(auth.check(call(undefined, { CN: 'ops' }), 'write'), undefined);
    assert.equal(
      auth.check(call(undefined, { CN: 'other' }), 'read')?.code,
      'LOOM_UNAUTHENTICATED',
    );
  });

  test('authenticator off without configuration', () => {
    const auth = new Authenticator({ logger });
    assert.equal(auth.check(call(), 'write'), undefined);
    assert.equal(auth.check(call(), 'stream'), undefined);
  });

  test('admission paces new streams', () => {
    const admission = new StreamAdmission({ maxStreams: 100, ratePerSecond: 5, logger });
    const streams = Array.from({ length: 10 }, () => fakeStream());
    const admitted = streams.filter((stream) => admission.admit(stream));
    assert.equal(admitted.length, 5);
    assert.equal(admission.open, 5);
    for (const stream of streams.filter((s) => !admitted.includes(s))) {
      assert.equal(stream.ended?.code, 8, 'refused stream did not end with RESOURCE_EXHAUSTED');
    }
    admitted[0].emit('cancelled');
    admitted[0].emit('close');
    assert.equal(admission.open, 4);
    admission.close();
  });

  test('admission rejects bad limits', () => {
    assert.throws(
      () => new StreamAdmission({ maxStreams: 0, ratePerSecond: 5, logger }),
      /invalid --max-streams 0/,
    );
    assert.throws(
      () => new StreamAdmission({ maxStreams: 1, ratePerSecond: -1, logger }),
      /invalid --stream-admission-rate -1/,
    );
  });

  test('loomctl config file loads', () => {
    const file = join(dir, 'loomctl.yaml');
    writeFileSync(file, 'controlPlane: 127.0.0.1:7400\ntoken: t1\ntls: {ca: ca.pem}\n');
    assert.deepEqual(loadLoomctlConfig(file), {
      controlPlane: '127.0.0.1:7400',
      token: 't1',
      tls: { ca: join(dir, 'ca.pem'), cert: undefined, key: undefined },
    });
    writeFileSync(file, 'controlplane: x\n');
    assert.throws(() => loadLoomctlConfig(file), /allowed keys are controlPlane, token and tls/);
    assert.throws(() => loadLoomctlConfig(join(dir, 'missing.yaml')), /cannot read loomctl config/);
  });
});
