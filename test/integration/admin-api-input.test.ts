import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  status,
  type ClientDuplexStream,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';

import { AdminClient } from '../../cli/admin-client.js';
import { ConfigError, type LoomError } from '../../common/errors.js';
import {
  AdminServiceClient,
  AdminServiceService,
  type ApplyRequest,
} from '../../proto/gen/loom/v1/admin.js';
import { SnapshotServiceService } from '../../proto/gen/loom/v1/data_plane.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { startEtcdFleet, type EtcdBackedFleet } from '../helpers/etcd-fleet.js';

function upstream(name: string, fields: Partial<Upstream> = {}): Upstream {
  return { name, targets: [{ url: 'http://127.0.0.1:9001', weight: 1 }], ...fields };
}

function route(name: string, fields: Partial<Route> = {}): Route {
  return { name, hosts: [], paths: [`/${name}`], methods: [], upstream: 'users', ...fields };
}

function request(fields: Partial<ApplyRequest>): ApplyRequest {
  return {
    routes: [],
    upstreams: [],
    prune: false,
    dryRun: false,
    includeValues: false,
    ...fields,
  };
}

/**
 * Values that the protocol carries but config files may not have, sent by a gRPC client that
 * skips loomctl's checks, with the field and the message part that the rejection must contain.
 */
const INVALID: { label: string; request: ApplyRequest; field: string; message: RegExp }[] = [
  {
    label: 'weight above 10000',
    request: request({
      upstreams: [
        upstream('w', { targets: [{ url: 'http://127.0.0.1:9002', weight: 2 ** 32 - 1 }] }),
      ],
    }),
    field: 'targets[0].weight',
    message: /from 0 to 10000/,
  },
  {
    label: 'retries above 5',
    request: request({ routes: [route('retries', { retries: 4_000_000_000 })] }),
    field: 'retries',
    message: /from 0 to 5/,
  },
  {
    label: 'timeout above one day',
    request: request({
      routes: [
        route('timeout', {
          timeouts: { connectMs: 4_000_000_000, responseHeaderMs: 0, idleBodyMs: 0 },
        }),
      ],
    }),
    field: 'timeouts.connectMs',
    message: /from 0 to 86400000/,
  },
  {
    label: 'health check interval 0',
    request: request({
      upstreams: [
        upstream('checked', {
          healthCheck: {
            path: '/healthz',
            intervalMs: 0,
            timeoutMs: 1000,
            healthyThreshold: 1,
            unhealthyThreshold: 1,
          },
        }),
      ],
    }),
    field: 'healthCheck.intervalMs',
    message: /from 1 to 86400000/,
  },
  {
    label: 'passive health threshold 0',
    request: request({
      upstreams: [
        upstream('passive', {
          passiveHealth: { consecutiveFailures: 0, baseEjectionMs: 1000, maxEjectionMs: 1000 },
        }),
      ],
    }),
    field: 'passiveHealth.consecutiveFailures',
    message: /from 1 to 1000/,
  },
  {
    label: 'unknown balancer',
    request: request({ upstreams: [upstream('random', { balancer: 'random' })] }),
    field: 'balancer',
    message: /"round-robin", "least-request", "hash"/,
  },
  {
    label: 'upstream without targets',
    request: request({ upstreams: [upstream('empty', { targets: [] })] }),
    field: 'targets',
    message: /at least one target/,
  },
  {
    label: 'route without paths',
    request: request({ routes: [route('pathless', { paths: [] })] }),
    field: 'paths',
    message: /at least one path/,
  },
  {
    label: 'control character in caFile',
    request: request({
      upstreams: [
        upstream('ca', {
          tls: { caFile: '/tmp/\u001b[31mca.pem', serverName: '', insecureSkipVerify: false },
        }),
      ],
    }),
    field: 'tls.caFile',
    message: /control character/,
  },
  {
    label: 'serverName with a port',
    request: request({
      upstreams: [
        upstream('sni', {
          tls: { caFile: '', serverName: 'api.internal:443', insecureSkipVerify: false },
        }),
      ],
    }),
    field: 'tls.serverName',
    message: /without a port or wildcard/,
  },
  {
    label: 'name with a slash',
    request: request({ routes: [route('../upstreams/users')] }),
    field: 'name',
    message: /letters, digits/,
  },
];

/** Wire bytes that no message decodes: a length-delimited field 1 cut short. */
const TRUNCATED = Buffer.from([0x0a, 0x05, 0x01]);

/** A client of every method of `service` that sends and receives raw bytes. */
interface RawClient {
  [method: string]: (...args: unknown[]) => unknown;
  close(): void;
}

/** Creates a client of `service` at `address` whose methods send their argument as it is. */
function rawClient(service: ServiceDefinition, name: string, address: string): RawClient {
  const raw = Object.fromEntries(
    Object.entries(service).map(([key, method]) => [
      key,
      {
        ...method,
        requestSerialize: (bytes: Buffer) => bytes,
        responseDeserialize: (bytes: Buffer) => bytes,
      },
    ]),
  );
  const Client = makeGenericClientConstructor(raw, name);
  return new Client(address, credentials.createInsecure()) as unknown as RawClient;
}

describe('admin API input checks', { timeout: 60_000 }, () => {
  let setup: EtcdBackedFleet;
  let client: AdminClient;

  before(async () => {
    setup = await startEtcdFleet({ proxies: 0 });
    client = new AdminClient(setup.fleet.controlPlane);
    await client.apply(request({ upstreams: [upstream('users')] }));
  });

  after(async () => {
    client?.close();
    await setup?.stop();
  });

  for (const { label, request: sent, field, message } of INVALID) {
    test(`apply rejects ${label}`, async () => {
      const before = await client.getConfig();
      const keysBefore = await setup.client.getAll().prefix('/loom/').strings();
      const error = await client.apply(sent).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      assert.equal(error.issues[0]?.field, field, JSON.stringify(error.issues));
      assert.match(error.issues[0].message, message);

      const afterwards = await client.getConfig();
      assert.equal(afterwards.version, before.version, 'the store changed');
      assert.deepEqual(afterwards.upstreams, before.upstreams);
      assert.deepEqual(afterwards.routes, before.routes);
      assert.deepEqual(await setup.client.getAll().prefix('/loom/').strings(), keysBefore);
    });
  }

  test('target secrets stay out of errors', async () => {
    const urls = [
      'http://user:s3cret-a@127.0.0.1:9002',
      'https://s3cret-b@127.0.0.1:9002',
      'http://127.0.0.1:9002/?key=s3cret-c',
    ];
    for (const url of urls) {
      const sent = request({ upstreams: [upstream('secret', { targets: [{ url, weight: 1 }] })] });
      const error = await client.apply(sent).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      assert.equal(error.issues[0]?.field, 'targets[0].url');
      assert.doesNotMatch(error.message, /s3cret/, url);
      assert.doesNotMatch(JSON.stringify(error.issues), /s3cret/, url);
    }
    assert.doesNotMatch(setup.fleet.logs(), /s3cret/);
  });

  test('concurrent applies all commit', async () => {
    const names = Array.from({ length: 12 }, (_, index) => `parallel-${index}`);
    const results = await Promise.allSettled(
      names.map((name) => client.apply(request({ upstreams: [upstream(name)] }))),
    );
    const failures = results.filter((result) => result.status === 'rejected');
    assert.deepEqual(failures, []);
    const versions = results.map((result) =>
      result.status === 'fulfilled' ? result.value.version : 0,
    );
    assert.equal(new Set(versions).size, names.length, `versions ${versions.join(', ')}`);
    const stored = (await client.getConfig()).upstreams.map((item) => item.name);
    for (const name of names) assert.ok(stored.includes(name), `${name} is not stored`);
  });

  test('concurrent if-version applies commit once', async () => {
    const { version } = await client.getConfig();
    const names = Array.from({ length: 6 }, (_, index) => `guarded-${index}`);
    const results = await Promise.allSettled(
      names.map((name) =>
        client.apply(request({ upstreams: [upstream(name)], ifVersion: version })),
      ),
    );
    const committed = results.filter((result) => result.status === 'fulfilled');
    assert.equal(committed.length, 1, JSON.stringify(results));
    for (const result of results) {
      if (result.status === 'fulfilled') continue;
      const error = result.reason as LoomError;
      assert.equal(error.code, 'LOOM_VERSION_CONFLICT', error.message);
    }
    const stored = (await client.getConfig()).upstreams.filter((item) =>
      item.name.startsWith('guarded-'),
    );
    assert.equal(stored.length, 1);
  });

  test('queued write of a timed-out call is dropped', async () => {
    // A raw client, because AdminClient gives every apply a 30 s deadline.
    const raw = new AdminServiceClient(setup.fleet.controlPlane, credentials.createInsecure());
    const rawApply = (sent: ApplyRequest, deadlineMs: number) =>
      new Promise<void>((resolve, reject) => {
        const deadline = new Date(Date.now() + deadlineMs);
        raw.apply(sent, new Metadata(), { deadline }, (error) =>
          error ? reject(error) : resolve(),
        );
      });
    setup.etcd.freeze();
    let thawed = false;
    try {
      // The first apply keeps the write queue busy while etcd does not respond.
      const first = client.apply(request({ upstreams: [upstream('queue-first')] })).then(
        () => 'committed',
        (error: unknown) => String(error),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      const gaveUp = await rawApply(request({ upstreams: [upstream('gave-up')] }), 1_000).then(
        () => 'committed',
        (error: { code?: number }) => error.code,
      );
      assert.equal(gaveUp, status.DEADLINE_EXCEEDED);
      setup.etcd.thaw();
      thawed = true;
      await first;
      // This apply queues behind the one that gave up, so its turn has passed when it returns.
      await client.apply(request({ upstreams: [upstream('queue-last')] }));
      const stored = (await client.getConfig()).upstreams.map((item) => item.name);
      assert.ok(stored.includes('queue-last'), stored.join(', '));
      assert.ok(!stored.includes('gave-up'), 'the apply that timed out was committed later');
    } finally {
      if (!thawed) setup.etcd.thaw();
      raw.close();
    }
  });

  test('long names keep the connection usable', async () => {
    // A raw client with short deadlines, so that a call without a response fails fast.
    const raw = new AdminServiceClient(setup.fleet.controlPlane, credentials.createInsecure());
    const deadline = () => ({ deadline: new Date(Date.now() + 5_000) });
    const name = 'x'.repeat(100_000);
    try {
      const deleted = await new Promise<ServiceError | null>((resolve) => {
        raw.delete({ kind: 'route', name }, new Metadata(), deadline(), resolve);
      });
      assert.equal(deleted?.code, status.NOT_FOUND, deleted?.message);
      assert.ok(deleted.details.length <= 4_000, `${deleted.details.length} characters`);
      assert.match(deleted.details, /"loomctl get routes" lists what is stored$/);

      const applied = await new Promise<ServiceError | null>((resolve) => {
        raw.apply(request({ upstreams: [upstream(name)] }), new Metadata(), deadline(), resolve);
      });
      assert.equal(applied?.code, status.INVALID_ARGUMENT, applied?.message);
      assert.ok(applied.details.length <= 4_000, `${applied.details.length} characters`);

      const answered = await new Promise<ServiceError | null>((resolve) => {
        raw.status({ version: 0 }, new Metadata(), deadline(), resolve);
      });
      assert.equal(answered, null);
    } finally {
      raw.close();
    }
  });

  test('apply with --dry-run rejects the same values', async () => {
    const error = await client.apply({ ...INVALID[0].request, dryRun: true }).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
  });

  test('malformed messages get INVALID_ARGUMENT', async () => {
    const admin = rawClient(AdminServiceService, 'loom.v1.AdminService', setup.fleet.controlPlane);
    try {
      for (const [method, path] of [
        ['apply', '/loom.v1.AdminService/Apply'],
        ['getConfig', '/loom.v1.AdminService/GetConfig'],
        ['delete', '/loom.v1.AdminService/Delete'],
        ['status', '/loom.v1.AdminService/Status'],
      ]) {
        const error = await new Promise<ServiceError | null>((resolve) => {
          admin[method](TRUNCATED, (failure: ServiceError | null) => resolve(failure));
        });

        assert.equal(error?.code, status.INVALID_ARGUMENT, `${method}: ${error?.message}`);
        assert.equal(
          error?.details,
          `invalid ${path} request: the message is not valid protobuf (premature EOF); ` +
            'encode it from the .proto files in proto/loom/v1',
        );
      }
    } finally {
      admin.close();
    }
    assert.match(setup.fleet.logs(), /"msg":"malformed request rejected"/);
  });

  test('malformed message log is capped', async () => {
    const admin = rawClient(AdminServiceService, 'loom.v1.AdminService', setup.fleet.controlPlane);
    const started = Date.now();
    try {
      for (let sent = 0; sent < 30; sent++) {
        const error = await new Promise<ServiceError | null>((resolve) => {
          admin.status(TRUNCATED, (failure: ServiceError | null) => resolve(failure));
        });
        assert.equal(error?.code, status.INVALID_ARGUMENT, error?.message);
      }
    } finally {
      admin.close();
    }
    // Each window of 10 s logs at most 10 rejections of one service. The earlier test's window
    // may still be open, hence the one window more.
    const windows = Math.ceil((Date.now() - started) / 10_000) + 1;
    const lines = setup.fleet.logs().match(/"msg":"malformed request rejected"/g) ?? [];
    assert.ok(lines.length <= 10 * windows, `${lines.length} lines in ${windows} windows`);
    assert.ok(lines.length < 34, `${lines.length} lines for 34 rejected requests`);
  });

  test('malformed stream message gets INVALID_ARGUMENT', async () => {
    const snapshots = rawClient(
      SnapshotServiceService,
      'loom.v1.SnapshotService',
      setup.fleet.controlPlane,
    );
    try {
      const call = snapshots.stream() as ClientDuplexStream<Buffer, Buffer>;
      const failed = new Promise<ServiceError>((resolve) => call.on('error', resolve));
      call.on('data', () => undefined);
      call.write(Buffer.from([0x0f]));
      const error = await failed;

      assert.equal(error.code, status.INVALID_ARGUMENT, error.message);
      assert.equal(
        error.details,
        'invalid /loom.v1.SnapshotService/Stream request: the message is not valid protobuf ' +
          '(cant skip wire type 7); encode it from the .proto files in proto/loom/v1',
      );
    } finally {
      snapshots.close();
    }
  });
});
