import { createServer, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

import { parseHostPort } from '../../common/address.js';
import type { Logger } from '../../common/logger.js';
import type { ControlPlaneMetrics } from './control-plane-metrics.js';
import type { Readiness } from './readiness.js';

/**
 * The HTTP admin listener of a control plane: `GET /healthz` (200 while the process runs),
 * `GET /readyz` (200 when {@link Readiness} passes, else 503 with the reason) and
 * `GET /metrics` (Prometheus text format).
 */
export class ControlPlaneAdminServer {
  readonly #server: Server;
  readonly #metrics: ControlPlaneMetrics;
  readonly #readiness: Readiness;
  readonly #logger: Logger;

  constructor(metrics: ControlPlaneMetrics, readiness: Readiness, logger: Logger) {
    this.#metrics = metrics;
    this.#readiness = readiness;
    this.#logger = logger.child({ component: 'admin-http' });
    this.#server = createServer((req, res) => void this.#handle(req.url ?? '/', res));
  }

  /** Port the listener is bound to. */
  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /**
   * Listens on `address` (host:port; port 0 picks a free port).
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when the address does not parse.
   */
  async listen(address: string): Promise<void> {
    const { host, port } = parseHostPort(address, '--admin-listen');
    this.#server.listen(port, host);
    await once(this.#server, 'listening');
  }

  /** Closes the listener and every open connection. */
  async close(): Promise<void> {
    if (!this.#server.listening) return;
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(url: string, res: ServerResponse): Promise<void> {
    const path = url.split('?', 1)[0];
    try {
      if (path === '/healthz') {
        sendJson(res, 200, { status: 'ok' });
      } else if (path === '/readyz') {
        const result = await this.#readiness.check();
        sendJson(
          res,
          result.ready ? 200 : 503,
          result.ready
            ? { status: 'ready', epoch: result.epoch, version: result.version }
            : { status: 'not_ready', reason: result.reason },
        );
      } else if (path === '/metrics') {
        const body = await this.#metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.#metrics.registry.contentType });
        res.end(body);
      } else {
        sendJson(res, 404, {
          error: 'not_found',
          message: 'admin paths: /healthz, /readyz, /metrics',
        });
      }
    } catch (err) {
      this.#logger.error({ err, path }, 'admin request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal_error', message: 'see log' });
      else res.destroy();
    }
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
