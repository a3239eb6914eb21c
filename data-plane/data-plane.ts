import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

import { formatHostPort, parseHostPort } from '../common/address.js';
import type { Logger } from '../common/logger.js';
import type { Snapshot } from '../proto/gen/loom/v1/snapshot.js';
import { buildTable, describeBuildFailure } from './build-table.js';
import { createProxyHandler } from './proxy/proxy.js';
import { SnapshotClient } from './snapshot-client/snapshot-client.js';
import type { RoutingTable } from './table.js';
import { UpstreamRegistry } from './upstreams/registry.js';

/** Settings of a proxy process. */
export interface DataPlaneOptions {
  /** Control-plane addresses (host:port), tried in turn. */
  controlPlanes: string[];
  /** Traffic listener, host:port; port 0 picks a free port. */
  listen: string;
  /** Admin listener for /healthz and /readyz, host:port. */
  adminListen: string;
  /** Proxy id reported to the control plane. */
  id: string;
  logger: Logger;
}

/**
 * A proxy: the traffic listener, the admin listener and the snapshot client.
 * Every snapshot builds a new immutable table; one reference swap publishes it.
 */
export class DataPlane {
  #table: RoutingTable | undefined;
  readonly #upstreams: UpstreamRegistry;
  readonly #traffic: Server;
  readonly #admin: Server;
  readonly #client: SnapshotClient;
  readonly #logger: Logger;
  readonly #options: DataPlaneOptions;

  constructor(options: DataPlaneOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#upstreams = new UpstreamRegistry({ logger: options.logger });
    this.#traffic = createServer(
      createProxyHandler({ getTable: () => this.#table, logger: options.logger }),
    );
    this.#admin = createServer((req, res) => this.#serveAdmin(req.url ?? '/', res));
    this.#client = new SnapshotClient({
      addresses: options.controlPlanes,
      proxyId: options.id,
      proxyAddress: options.listen,
      logger: options.logger,
      held: () => ({ epoch: this.#table?.epoch ?? '', version: this.#table?.version ?? 0 }),
      apply: (snapshot) => this.applySnapshot(snapshot),
    });
  }

  /** The table serving new requests, or undefined before the first snapshot. */
  get table(): RoutingTable | undefined {
    return this.#table;
  }

  /** Port of the traffic listener. */
  get port(): number {
    return (this.#traffic.address() as AddressInfo).port;
  }

  /** Port of the admin listener. */
  get adminPort(): number {
    return (this.#admin.address() as AddressInfo).port;
  }

  /** Starts both listeners, then the snapshot stream. */
  async start(): Promise<void> {
    await listen(this.#traffic, parseHostPort(this.#options.listen, '--listen'));
    await listen(this.#admin, parseHostPort(this.#options.adminListen, '--admin-listen'));
    this.#client.start();
    this.#logger.info(
      {
        id: this.#options.id,
        listen: formatHostPort(parseHostPort(this.#options.listen, '--listen').host, this.port),
        adminPort: this.adminPort,
        controlPlanes: this.#options.controlPlanes,
      },
      'proxy listening',
    );
  }

  /**
   * Builds a table from a snapshot and swaps it in. Throws with the reason
   * when the build fails; the previous table then keeps serving.
   */
  async applySnapshot(snapshot: Snapshot): Promise<void> {
    const start = performance.now();
    let table: RoutingTable;
    try {
      table = buildTable(snapshot, this.#upstreams);
    } catch (error) {
      const reason = describeBuildFailure(error);
      this.#logger.warn(
        { epoch: snapshot.epoch, version: snapshot.version, error: reason },
        'snapshot rejected',
      );
      throw new Error(reason, { cause: error });
    }

    this.#table = table;
    this.#logger.info(
      {
        epoch: table.epoch,
        version: table.version,
        routes: table.router.size,
        buildMs: Number((performance.now() - start).toFixed(2)),
      },
      'snapshot applied',
    );
  }

  /** Stops the stream and both listeners and closes upstream pools. */
  async stop(): Promise<void> {
    this.#client.stop();
    this.#traffic.closeAllConnections();
    this.#admin.closeAllConnections();
    await Promise.all([closeServer(this.#traffic), closeServer(this.#admin)]);
    await this.#upstreams.close();
    this.#logger.info({ id: this.#options.id }, 'proxy stopped');
  }

  #serveAdmin(url: string, res: import('node:http').ServerResponse): void {
    const path = url.split('?', 1)[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
      return;
    }
    if (path === '/readyz') {
      const ready = this.#table !== undefined;
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          ready
            ? { status: 'ready', epoch: this.#table?.epoch, version: this.#table?.version }
            : { status: 'not_ready', reason: 'no snapshot applied yet' },
        ),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not_found","message":"admin paths: /healthz, /readyz"}');
  }
}

async function listen(server: Server, address: { host: string; port: number }): Promise<void> {
  server.listen(address.port, address.host);
  await once(server, 'listening');
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
