import { createServer, type Server, type ServerResponse } from 'node:http';

import type { Registry } from 'prom-client';

import type { Logger } from '../../common/logger.js';

/** Sources of the responses of a proxy's admin listener, read on each request. */
export interface AdminSources {
  /** HTTP status and JSON body of `GET /readyz`. */
  readiness(): { status: number; body: Record<string, unknown> };
  /** Registry that `GET /metrics` serves; a primary collects it from its workers first. */
  metrics(): Registry | Promise<Registry>;
  /** Logs a failed metrics collection. */
  logger: Logger;
}

/**
 * Creates the HTTP admin server of a proxy, single process or primary of
 * workers: `GET /healthz` returns 200 while the process runs, `GET /readyz`
 * the readiness that `sources` computes, `GET /metrics` the Prometheus text
 * format (500 when collection fails), and any other path 404 with a JSON body
 * that lists the admin paths. The query string is ignored. The caller listens
 * and closes.
 */
export function createAdminServer(sources: AdminSources): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/healthz') {
      sendJson(res, 200, '{"status":"ok"}');
      return;
    }
    if (path === '/readyz') {
      const answer = sources.readiness();
      sendJson(res, answer.status, JSON.stringify(answer.body));
      return;
    }
    if (path === '/metrics') {
      void serveMetrics(sources, res);
      return;
    }
    sendJson(
      res,
      404,
      '{"error":"not_found","message":"admin paths: /healthz, /readyz, /metrics"}',
    );
  });
}

async function serveMetrics(sources: AdminSources, res: ServerResponse): Promise<void> {
  try {
    const registry = await sources.metrics();
    const body = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType });
    res.end(body);
  } catch (err) {
    sources.logger.error({ err }, 'metrics scrape failed');
    sendJson(res, 500, '{"error":"internal_error","message":"metrics collection failed"}');
  }
}

function sendJson(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(body);
}
