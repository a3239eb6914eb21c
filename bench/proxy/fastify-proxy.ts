// @fastify/http-proxy (undici underneath) as a benchmark peer.
// Usage: tsx bench/proxy/fastify-proxy.ts LISTEN_PORT UPSTREAM_URL
import fastifyHttpProxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const [port, upstream] = process.argv.slice(2);
const app = Fastify({ logger: false });
await app.register(fastifyHttpProxy, { upstream, undici: { connections: 128 } });
await app.listen({ port: Number(port), host: '127.0.0.1' });
