import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, Agent, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';

import { SnapshotFile } from '../../data-plane/snapshot-client/snapshot-file.js';
import { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfig, fixtureConfig, readyz, waitForVersion, Workspace } from './harness.js';

/** Starts an upstream that responds to `/hold/{ms}` after that many milliseconds. */
async function startSlowUpstream(): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const delay = Number(/\/hold\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
    setTimeout(() => res.end('done'), delay);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

interface Outcome {
  status?: number;
  connection?: string;
  body?: string;
  error?: string;
}

function get(port: number, path: string, agent: Agent): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode, connection: res.headers.connection, body }),
      );
      res.on('error', (error) => resolve({ error: error.message }));
    });
    req.on('error', (error) => resolve({ error: error.message }));
    req.end();
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('proxy lifecycle', { timeout: 90_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startSlowUpstream>>;

  before(async () => {
    upstream = await startSlowUpstream();
  });

  after(() => {
    upstream.server.close();
  });

  test('SIGTERM drains in-flight requests', async () => {
    const ws = new Workspace();
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    try {
      const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
      const proxy = await ws.proxy('proxy', [cp.address], ['--drain-timeout', '10s']);
      await waitForVersion(
        proxy.adminPort,
        await applyConfig(cp.address, fixtureConfig(upstream.port, 0)),
      );

      // One keep-alive connection left idle, one carrying a request that takes 1.5 s.
      assert.equal((await get(proxy.port, '/hold/0', agent)).status, 200);
      const idle = Object.values(agent.freeSockets).flat()[0] as Socket;
      const idleClosed = once(idle, 'close');
      const slow = get(proxy.port, '/hold/1500', new Agent({ keepAlive: true }));
      await new Promise((resolve) => setTimeout(resolve, 200));

      const exited = new Promise<number | null>((resolve) =>
        proxy.process.child.once('exit', (code) => resolve(code)),
      );
      proxy.process.child.kill('SIGTERM');
      await waitFor('readiness to turn false', 2_000, async () => {
        return (await readyz(proxy.adminPort)).body.status === 'draining';
      });
      assert.equal(await canConnect(proxy.port), false, 'listener still accepts');
      await idleClosed;

      const outcome = await slow;
      assert.equal(outcome.status, 200, outcome.error);
      assert.equal(outcome.body, 'done');
      assert.equal(outcome.connection, 'close');
      assert.equal(await exited, 0);
      const log = readFileSync(proxy.logFile, 'utf8');
      assert.match(log, /"msg":"drain finished"/);
    } finally {
      agent.destroy();
      await ws.close();
    }
  });

  for (const extra of [[], ['--workers', '2']]) {
    const name = ['accept grace keeps the port open while not ready', ...extra].join(' ');
    test(name, async () => {
      const ws = new Workspace();
      try {
        const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
        // Long enough that the two checks below run inside it on a loaded machine.
        const grace = ['--drain-timeout', '60s', '--drain-accept-grace', '2500ms'];
        const proxy = await ws.proxy('proxy', [cp.address], [...grace, ...extra]);
        await waitForVersion(
          proxy.adminPort,
          await applyConfig(cp.address, fixtureConfig(upstream.port, 0)),
        );

        const exited = once(proxy.process.child, 'exit');
        proxy.process.child.kill('SIGTERM');
        await waitFor('readiness to turn false', 2_000, async () => {
          return (await readyz(proxy.adminPort)).body.status === 'draining';
        });
        const during = await get(proxy.port, '/hold/0', new Agent({ keepAlive: true }));
        assert.equal(during.status, 200, during.error);
        assert.equal(during.connection, 'close');

        await waitFor('the listener to close', 30_000, async () => !(await canConnect(proxy.port)));
        assert.deepEqual(await exited, [0, null]);
        const log = readFileSync(proxy.logFile, 'utf8');
        assert.match(log, /"msg":"drain accept grace period ended, listener closing"/);
        assert.match(log, /"acceptGraceMs":2500/);
      } finally {
        await ws.close();
      }
    });
  }

  test('drain deadline cuts long requests', async () => {
    const ws = new Workspace();
    try {
      const cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
      const proxy = await ws.proxy('proxy', [cp.address], ['--drain-timeout', '300ms']);
      await waitForVersion(
        proxy.adminPort,
        await applyConfig(cp.address, fixtureConfig(upstream.port, 0)),
      );
      const long = get(proxy.port, '/hold/5000', new Agent());
      await new Promise((resolve) => setTimeout(resolve, 200));

      const exitCode = await proxy.process.stop(10_000);
      assert.equal(exitCode, 0);
      assert.ok((await long).error !== undefined, 'the long request was not cut');
      const timedOut = readFileSync(proxy.logFile, 'utf8')
        .split('\n')
        .find((line) => line.includes('"msg":"drain timed out"'));
      assert.ok(timedOut, 'no "drain timed out" line');
      assert.equal((JSON.parse(timedOut) as { abandoned: number }).abandoned, 1);
    } finally {
      await ws.close();
    }
  });

  describe('snapshot file', () => {
    let dir: string;
    const snapshot: Snapshot = {
      version: 7,
      epoch: 'e1',
      hash: 'abc',
      routes: [],
      upstreams: [],
    };

    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'loom-snapshot-file-'));
    });

    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    test('round trip keeps the snapshot', async () => {
      const file = new SnapshotFile(join(dir, 'a.json'), pino({ enabled: false }));
      await file.save(snapshot);
      const loaded = await file.load(60_000);
      assert.deepEqual(loaded?.snapshot, snapshot);
      assert.deepEqual(readdirSync(dir), ['a.json'], 'a temporary file was left behind');
    });

    test('corrupt file is ignored', async () => {
      const path = join(dir, 'b.json');
      const file = new SnapshotFile(path, pino({ enabled: false }));
      await file.save(snapshot);
      const envelope = JSON.parse(readFileSync(path, 'utf8')) as { snapshot: string };
      envelope.snapshot = Buffer.from('tampered').toString('base64');
      writeFileSync(path, JSON.stringify(envelope));
      assert.equal(await file.load(60_000), undefined);
      writeFileSync(path, '{"truncated');
      assert.equal(await file.load(60_000), undefined);
    });

    test('old or missing file is ignored', async () => {
      const file = new SnapshotFile(join(dir, 'c.json'), pino({ enabled: false }));
      assert.equal(await file.load(60_000), undefined);
      await file.save(snapshot);
      assert.equal(await file.load(60_000, Date.now() + 120_000), undefined);
      assert.ok((await file.load(60_000)) !== undefined);
    });

    test('encoded bytes are saved as given', async () => {
      const file = new SnapshotFile(join(dir, 'e.json'), pino({ enabled: false }));
      const encoded = Snapshot.encode(snapshot).finish();
      const encode = Snapshot.encode;
      Snapshot.encode = () => {
        throw new Error('the snapshot was encoded again');
      };
      let saved: Promise<void>;
      try {
        saved = file.save(snapshot, encoded);
      } finally {
        Snapshot.encode = encode;
      }
      // save() copies the bytes before it returns, so the caller may reuse its buffer.
      encoded.fill(0);
      await saved;
      assert.deepEqual((await file.load(60_000))?.snapshot, snapshot);
    });

    test('flush writes before the delay', async () => {
      const path = join(dir, 'f.json');
      const file = new SnapshotFile(path, pino({ enabled: false }), { writeDelayMs: 600_000 });
      const saved = file.save({ ...snapshot, version: 7 });
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(existsSync(path), false, 'the save was written before its delay');
      await file.flush();
      await saved;
      assert.equal((await file.load(60_000))?.snapshot.version, 7);
      await file.flush();
    });

    test('newest pending save wins', async () => {
      const file = new SnapshotFile(join(dir, 'd.json'), pino({ enabled: false }));
      const saves = [1, 2, 3, 4].map((version) => file.save({ ...snapshot, version }));
      await Promise.all(saves);
      assert.equal((await file.load(60_000))?.snapshot.version, 4);
    });
  });
});
