import { request } from 'node:http';

/** Response of `httpRequest`: status, headers and the body as text. */
export interface TextResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * Sends one request without keep-alive and returns the whole response. It
 * uses node:http because fetch drops a custom Host header.
 */
export function httpRequest(
  method: string,
  url: string,
  headers: Record<string, string> = {},
): Promise<TextResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { connection: 'close', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Sends one GET; see `httpRequest`. */
export function httpGet(url: string, headers: Record<string, string> = {}): Promise<TextResponse> {
  return httpRequest('GET', url, headers);
}
