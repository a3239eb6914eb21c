import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { credentials, type ClientDuplexStream } from '@grpc/grpc-js';

import { AdminClient } from '../../cli/admin-client.js';
import { createLogger } from '../../common/logger.js';
import { ControlPlane } from '../../control-plane/control-plane.js';
import { resourceKey } from '../../control-plane/resources.js';
import {
  SnapshotServiceClient,
  type Nack,
  StreamRequest,
  StreamResponse,
} from '../../proto/gen/loom/v1/data_plane.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

const QUIET_MS = 300;

const upstream = { name: 'u', targets: [{ url: 'http://127.0.0.1:1', weight: 1 }] };
const route = (name: string): Route => ({
  name,
  hosts: [],
  paths: [`/${name}`],
  methods: [],
  upstream: 'u',
});

/** A proxy's stream driven by the test: it sends Hello, acks and nacks by hand. */
class RawProxy {
  readonly received: Snapshot[] = [];
  readonly #client: SnapshotServiceClient;
  readonly #call: ClientDuplexStream<StreamRequest, StreamResponse>;
  #waiters: (() => void)[] = [];

  constructor(
    address: string,
    id: string,
    held: { epoch: string; version: number },
    nacked: Nack[] = [],
  ) {
    this.#client = new SnapshotServiceClient(address, credentials.createInsecure(), {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    });
    this.#call = this.#client.stream();
    this.#call.on('data', (response: StreamResponse) => {
      if (response.snapshot) this.received.push(response.snapshot);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.#call.on('error', () => undefined);
    this.#call.write({
      kind: {
        $case: 'hello',
        hello: { proxyId: id, address: '127.0.0.1:8080', nacked, instanceId: '', ...held },
      },
    });
  }

  /** Resolves with the next snapshot received after `count` ones, or rejects after 5 s. */
  async snapshot(count: number): Promise<Snapshot> {
    const deadline = Date.now() + 5_000;
    while (this.received.length <= count) {
      if (Date.now() > deadline) throw new Error(`no snapshot #${count + 1} within 5 s`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.received[count];
  }

  ack(snapshot: Snapshot): void {
    const { epoch, version, hash } = snapshot;
    this.#call.write({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
  }

  nack(snapshot: Snapshot, error: string): void {
    const { epoch, version, hash } = snapshot;
    this.#call.write({ kind: { $case: 'nack', nack: { epoch, version, hash, error } } });
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('snapshot stream', { concurrency: 1 }, () => {
  let dir: string;
  let controlPlane: ControlPlane;
  let admin: AdminClient;
  let address: string;

  const apply = async (routes: Route[]) => {
    const response = await admin.apply({
      routes,
      upstreams: [upstream],
      prune: true,
      dryRun: false,
      includeValues: false,
    });
    return response.version;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-stream-'));
    controlPlane = await ControlPlane.start({
      listen: '127.0.0.1:0',
      etcdEndpoints: [],
      dataDir: join(dir, 'store'),
      logger: createLogger({ name: 'test', level: 'silent' }),
      streamAdmissionRate: 1_000,
    });
    address = `127.0.0.1:${controlPlane.port}`;
    admin = new AdminClient(address);
  });

  after(async () => {
    admin.close();
    await controlPlane.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('nacked version is not re-sent', async () => {
    const v1 = await apply([route('a')]);
    const proxy = new RawProxy(address, 'nacker', { epoch: '', version: 0 });
    try {
      const first = await proxy.snapshot(0);
      assert.equal(first.version, v1);
      proxy.ack(first);

      const v2 = await apply([route('a'), route('b')]);
      const second = await proxy.snapshot(1);
      assert.equal(second.version, v2);
      proxy.nack(second, 'rejected by the test');
      // An apply that changes nothing and a commit of identical content create nothing to send.
      assert.equal(await apply([route('a'), route('b')]), v2);
      await sleep(QUIET_MS);
      assert.equal(proxy.received.length, 2);

      const v3 = await apply([route('a'), route('c')]);
      const third = await proxy.snapshot(2);
      assert.equal(third.version, v3);
      const status = await admin.status({ version: v3 });
      const record = status.proxies.find((entry) => entry.id === 'nacker');
      assert.equal(record?.snapshotsSent, 3);
      assert.equal(record?.nackedVersion, v2);
      assert.equal(record?.nackError, 'rejected by the test');
    } finally {
      proxy.close();
    }
  });

  test('reconnect does not resend nacked version', async () => {
    const v1 = await apply([route('d')]);
    const first = new RawProxy(address, 'returning', { epoch: '', version: 0 });
    const snapshot = await first.snapshot(0);
    assert.equal(snapshot.version, v1);
    first.nack(snapshot, 'bad build');
    await sleep(100);
    first.close();

    // It still serves an older version, so the nacked one would only be nacked again.
    const again = new RawProxy(address, 'returning', { epoch: snapshot.epoch, version: 1 });
    const fresh = new RawProxy(address, 'returning-fresh', { epoch: '', version: 0 });
    try {
      assert.equal((await fresh.snapshot(0)).version, v1);
      await sleep(QUIET_MS);
      assert.equal(again.received.length, 0);
    } finally {
      again.close();
      fresh.close();
    }
  });

  test('nacked versions in hello not sent', async () => {
    const v1 = await apply([route('n1')]);
    const v2 = await apply([route('n1'), route('n2')]);
    const epoch = controlPlane.cache.current?.snapshot.epoch ?? '';
    const nack = { epoch, version: v2, hash: '', error: 'bad build before a restart' };
    // The control plane has no record of this proxy, so only its hello reports the nack.
    const proxy = new RawProxy(address, 'named-nacks', { epoch, version: v1 }, [nack]);
    try {
      await sleep(QUIET_MS);
      assert.equal(proxy.received.length, 0);
      const status = await admin.status({ version: v2 });
      const record = status.proxies.find((entry) => entry.id === 'named-nacks');
      assert.equal(record?.nackedVersion, v2);
      assert.equal(record?.nackError, 'bad build before a restart');

      const v3 = await apply([route('n1'), route('n3')]);
      assert.equal((await proxy.snapshot(0)).version, v3);
    } finally {
      proxy.close();
    }
  });

  test('identical content is not republished', async () => {
    const version = await apply([route('e')]);
    const proxy = new RawProxy(address, 'watcher', { epoch: '', version: 0 });
    try {
      proxy.ack(await proxy.snapshot(0));
      const current = controlPlane.cache.current?.snapshot;
      assert.equal(current?.version, version);

      // Rewriting a key with its own value makes a new store revision with the same content.
      const stored = JSON.stringify({
        name: 'e',
        hosts: [],
        paths: ['/e'],
        methods: [],
        upstream: 'u',
      });
      const revision = await controlPlane.store.commit([
        { type: 'put', key: resourceKey('/loom/', 'route', 'e'), value: stored },
      ]);
      assert.ok(revision > version);
      await sleep(QUIET_MS);
      assert.equal(controlPlane.cache.current?.snapshot.version, version);
      assert.equal(proxy.received.length, 1);
    } finally {
      proxy.close();
    }
  });

  test('status reports ack time per version', async () => {
    const proxy = new RawProxy(address, 'timed', { epoch: '', version: 0 });
    try {
      proxy.ack(await proxy.snapshot(0));
      const version = await apply([route('f')]);
      const snapshot = await proxy.snapshot(1);
      proxy.ack(snapshot);
      await sleep(100);
      const status = await admin.status({ version });
      const record = status.proxies.find((entry) => entry.id === 'timed');
      assert.ok(status.versionCommittedAtMs > 0);
      assert.ok((record?.versionAckedAtMs ?? 0) >= status.versionCommittedAtMs);
      assert.equal(record?.ackedVersion, version);
    } finally {
      proxy.close();
    }
  });

  test('slow proxy gets the newest only', async () => {
    // About 100 KB per snapshot, more than HTTP/2's initial flow-control window of 64 KiB.
    const many = (generation: number) =>
      Array.from({ length: 3_000 }, (_, index) => route(`bulk-${generation}-${index}`));
    const proxy = await SlowProxy.open(address, 'slow');
    try {
      await proxy.waitFor(() => proxy.versions.length === 1);
      proxy.pause();
      let newest = 0;
      for (let generation = 1; generation <= 6; generation++)
        newest = await apply(many(generation));
      await sleep(200);
      proxy.resume();

      await proxy.waitFor(() => proxy.versions.at(-1) === newest);
      const sent = proxy.versions.slice(1);
      assert.equal(sent.at(-1), newest);
      assert.ok(sent.length < 6, `sent ${sent.join(', ')}`);
    } finally {
      proxy.close();
    }
  });
});

/**
 * A proxy on a raw HTTP/2 stream, because grpc-js reads every message off the
 * connection even when its stream is paused. Pausing this one stops reading,
 * so flow control blocks the control plane's writes.
 */
class SlowProxy {
  readonly versions: number[] = [];
  #buffer = Buffer.alloc(0);
  readonly #session: ClientHttp2Session;
  readonly #stream: ClientHttp2Stream;

  private constructor(session: ClientHttp2Session, stream: ClientHttp2Stream) {
    this.#session = session;
    this.#stream = stream;
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
    stream.on('error', () => undefined);
  }

  static async open(address: string, id: string): Promise<SlowProxy> {
    const session = connect(`http://${address}`);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/loom.v1.SnapshotService/Stream',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const proxy = new SlowProxy(session, stream);
    proxy.#send({
      kind: {
        $case: 'hello',
        hello: {
          proxyId: id,
          address: '127.0.0.1:8080',
          epoch: '',
          version: 0,
          nacked: [],
          instanceId: '',
        },
      },
    });
    return proxy;
  }

  pause(): void {
    this.#stream.pause();
  }

  resume(): void {
    this.#stream.resume();
  }

  async waitFor(check: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out; received ${this.versions.join(', ')}`);
      await sleep(20);
    }
  }

  close(): void {
    this.#stream.close();
    this.#session.close();
  }

  #send(request: StreamRequest): void {
    const message = StreamRequest.encode(request).finish();
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    this.#stream.write(frame);
  }

  /** Splits gRPC length-prefixed messages out of the byte stream and acks each snapshot. */
  #onData(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 5) {
      const length = this.#buffer.readUInt32BE(1);
      if (this.#buffer.length < 5 + length) return;
      const response = StreamResponse.decode(this.#buffer.subarray(5, 5 + length));
      this.#buffer = this.#buffer.subarray(5 + length);
      const snapshot = response.snapshot;
      if (!snapshot) continue;
      this.versions.push(snapshot.version);
      const { epoch, version, hash } = snapshot;
      this.#send({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
    }
  }
}
