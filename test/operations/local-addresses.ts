// Maps the addresses of a deployment (service names, 0.0.0.0, container ports) to free ports
// on 127.0.0.1, so that the deployment's own commands run as plain local processes.
import { findFreePort } from '../helpers/ports.js';

/** Free local ports by owner (a service or workload, with its replica) and container port. */
export class LocalPorts {
  readonly #ports = new Map<string, number>();

  /** Returns the local port of `containerPort` of `owner`, picking a free one on first use. */
  async get(owner: string, containerPort: number): Promise<number> {
    const key = `${owner}:${containerPort}`;
    let port = this.#ports.get(key);
    if (port === undefined) {
      port = await findFreePort();
      this.#ports.set(key, port);
    }
    return port;
  }

  /** Fixes the local port of `containerPort` of `owner`, for a server the test started. */
  set(owner: string, containerPort: number, port: number): void {
    this.#ports.set(`${owner}:${containerPort}`, port);
  }
}

/** `host:port` inside an argument, not preceded by a name character. */
const ADDRESS = /(?<![\w.-])([A-Za-z0-9][A-Za-z0-9.-]*):(\d{2,5})\b/g;

/**
 * Rewrites every `host:port` in `arg`. `0.0.0.0` and `127.0.0.1` become the local port of
 * `self`. Any other host goes through `resolve`, which returns the owner that the host names.
 * When it returns undefined, the address stays unchanged.
 */
export async function rewriteAddresses(
  arg: string,
  self: string,
  ports: LocalPorts,
  resolve: (host: string, port: number) => { owner: string; port: number } | undefined,
): Promise<string> {
  const replacements: string[] = [];
  for (const match of arg.matchAll(ADDRESS)) {
    const [, host, portText] = match;
    const port = Number(portText);
    if (host === '0.0.0.0' || host === '127.0.0.1') {
      replacements.push(`127.0.0.1:${await ports.get(self, port)}`);
      continue;
    }
    const target = resolve(host, port);
    replacements.push(
      target === undefined ? match[0] : `127.0.0.1:${await ports.get(target.owner, target.port)}`,
    );
  }
  let index = 0;
  return arg.replace(ADDRESS, () => replacements[index++]);
}
