import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import fc from 'fast-check';
import { stringify } from 'yaml';

import { ConfigError, LoomError } from '../../common/errors.js';
import { parseConfigTexts } from '../../config/load.js';
import { httpGet } from '../helpers/net.js';
import { applyConfig, fixtureConfig, startUpstream, waitForVersion, Workspace } from './harness.js';

/** Parses and accepts only a result or a ConfigError; anything else fails the property. */
function parsesOrRejects(text: string): void {
  try {
    parseConfigTexts([{ file: 'fuzz.yaml', text }]);
  } catch (error) {
    if (error instanceof ConfigError || error instanceof LoomError) return;
    throw error;
  }
}

const fieldValue = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 3 }),
);

const routeLike = fc.record(
  {
    name: fc.oneof(fc.string(), fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/)),
    paths: fc.array(
      fc.oneof(fc.string(), fc.stringMatching(/^(\/(:?[a-z]{1,5}|\*[a-z]{1,3}))+$/)),
      {
        maxLength: 3,
      },
    ),
    hosts: fc.array(fc.oneof(fc.string(), fc.domain()), { maxLength: 2 }),
    methods: fc.array(fc.constantFrom('GET', 'POST', 'get', 'BREW', ''), { maxLength: 3 }),
    upstream: fc.oneof(fc.string(), fc.constant('u')),
    extra: fieldValue,
  },
  { requiredKeys: [] },
);

const upstreamLike = fc.record(
  {
    name: fc.oneof(fc.string(), fc.constant('u')),
    targets: fc.array(
      fc.record(
        {
          url: fc.oneof(fc.string(), fc.webUrl(), fc.constant('http://127.0.0.1:1')),
          weight: fieldValue,
        },
        { requiredKeys: [] },
      ),
      { maxLength: 3 },
    ),
  },
  { requiredKeys: [] },
);

describe('fuzz', { timeout: 90_000 }, () => {
  test('config parser on random text', () => {
    const outcome = fc.check(
      fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (text) => parsesOrRejects(text)),
      { numRuns: 400, interruptAfterTimeLimit: 20_000 },
    );
    assert.equal(outcome.interrupted, false, 'the parser took over 20 s for 400 inputs');
    assert.equal(outcome.failed, false, fc.defaultReportMessage(outcome) ?? '');
  });

  test('config parser on near-valid documents', () => {
    const document = fc.record(
      {
        apiVersion: fc.oneof(fc.constant('loom/v1'), fc.string()),
        routes: fc.oneof(fc.array(routeLike, { maxLength: 4 }), fieldValue),
        upstreams: fc.oneof(fc.array(upstreamLike, { maxLength: 3 }), fieldValue),
      },
      { requiredKeys: [] },
    );
    const outcome = fc.check(
      fc.property(document, fc.boolean(), (value, asJson) =>
        parsesOrRejects(asJson ? JSON.stringify(value) : stringify(value)),
      ),
      { numRuns: 400, interruptAfterTimeLimit: 20_000 },
    );
    assert.equal(outcome.interrupted, false, 'the parser took over 20 s for 400 inputs');
    assert.equal(outcome.failed, false, fc.defaultReportMessage(outcome) ?? '');
  });

  describe('proxy request path', () => {
    let ws: Workspace;
    let upstream: Awaited<ReturnType<typeof startUpstream>>;
    let proxyPort: number;

    before(async () => {
      upstream = await startUpstream('echo');
      ws = new Workspace();
      const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
      const proxy = await ws.proxy('proxy', [cp.address]);
      proxyPort = proxy.port;
      await waitForVersion(
        proxy.adminPort,
        await applyConfig(cp.address, fixtureConfig(upstream.port, 3)),
      );
    });

    after(async () => {
      await ws.close();
      upstream.server.close();
    });

    /** Writes `bytes`, then waits up to 2 s for the proxy to close the connection. */
    function send(bytes: Uint8Array): Promise<void> {
      return new Promise((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: proxyPort });
        const timer = setTimeout(() => socket.destroy(), 2_000);
        socket.on('error', () => undefined);
        socket.on('data', () => undefined);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.write(bytes, () => socket.end());
      });
    }

    test('random bytes never crash it', async () => {
      const requestLike = fc
        .tuple(
          fc.constantFrom('GET', 'POST', 'PUT', 'BREW', 'G\u0000T', ''),
          fc.oneof(fc.webPath(), fc.string(), fc.constantFrom('/hold/x', '*', 'http://a/b')),
          fc.array(fc.tuple(fc.string(), fc.string()), { maxLength: 5 }),
          fc.string(),
        )
        .map(([method, path, headers, body]) =>
          Buffer.from(
            `${method} ${path} HTTP/1.1\r\nHost: x\r\n` +
              headers.map(([name, value]) => `${name}: ${value}\r\n`).join('') +
              `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
          ),
        );
      const payloads = fc.sample(fc.oneof(fc.uint8Array({ maxLength: 2_000 }), requestLike), {
        numRuns: 150,
        seed: 42,
      });
      for (let i = 0; i < payloads.length; i += 10) {
        await Promise.all(payloads.slice(i, i + 10).map((payload) => send(payload)));
      }

      const healthy = await httpGet(`http://127.0.0.1:${proxyPort}/hold/after-fuzz`);
      assert.equal(healthy.status, 200);
      assert.equal(ws.members[1].process.child.exitCode, null, 'the proxy exited');
    });
  });
});
