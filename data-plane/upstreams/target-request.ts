import { request as httpRequest, type ClientRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TargetConnectOptions } from './balancer.js';

/**
 * Opens a `node:http` request, or a `node:https` one with the target's CA, server name and
 * certificate check, to the target that `connect` describes. `options` sets the rest, including
 * the host, port and agent.
 */
export function requestTarget(
  connect: TargetConnectOptions,
  options: RequestOptions,
): ClientRequest {
  return connect.secure
    ? httpsRequest({
        ...options,
        ca: connect.ca,
        servername: connect.servername,
        rejectUnauthorized: connect.rejectUnauthorized,
      })
    : httpRequest(options);
}
