// Measures Loom against other reverse proxies in one run: wrk and an nginx upstream pinned to
// core 0, each single-process proxy alone on core 1. Prints a Markdown table, or one JSON
// object with --json.
// Usage: tsx bench/proxy/run.ts [--json] [--duration 10s] [--runs 3] [--no-workers]
//                               [--only minimal,loom,...]
// --only runs the listed peers alone: direct, nginx, minimal, dispatch, http-proxy, fastify,
// loom, loom-quiet (access log off) and workers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT, waitForPort } from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';
import {
  BenchProcesses,
  loadAverage,
  median,
  nginxConfig,
  processTree,
  runWrk,
  startLoomProxy,
  startNginxUpstream,
  type Sample,
} from './harness.js';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    duration: { type: 'string', default: '10s' },
    runs: { type: 'string', default: '3' },
    'no-workers': { type: 'boolean', default: false },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: tsx bench/proxy/run.ts [--json] [--duration 10s] [--runs 3] [--no-workers]\n' +
      '  [--only PEER,...]\n' +
      'PEER: direct, nginx, minimal, dispatch, http-proxy, fastify, loom, loom-quiet, workers\n',
  );
  process.exit(0);
}
const PEER_KEYS = [
  'direct',
  'nginx',
  'minimal',
  'dispatch',
  'http-proxy',
  'fastify',
  'loom',
  'loom-quiet',
  'workers',
];
const only =
  values.only === undefined ? PEER_KEYS : values.only.split(',').map((key) => key.trim());
for (const key of only) {
  if (!PEER_KEYS.includes(key)) {
    process.stderr.write(
      `unknown peer ${JSON.stringify(key)} in --only; use ${PEER_KEYS.join(', ')}\n`,
    );
    process.exit(2);
  }
}
/** True when the peer named `key` takes part in this run. */
const selected = (key: string): boolean =>
  only.includes(key) && !(key === 'workers' && values['no-workers']);
const duration = values.duration ?? '10s';
const runs = Number(values.runs);
const dir = mkdtempSync(join(tmpdir(), 'loom-bench-'));
const processes = new BenchProcesses();
// `--import tsx` keeps the peer in one process; the tsx command line would fork a child.
const TSX_IMPORT = ['--import', 'tsx'];

interface Peer {
  name: string;
  url: string;
  /** PIDs whose CPU time and memory count as the proxy's. */
  pids: number[];
}

async function startPeers(): Promise<Peer[]> {
  const [upA, upB, nginxPort, minimal, dispatch, httpProxyPort, fastify] = await Promise.all(
    Array.from({ length: 7 }, () => findFreePort()),
  );
  const upstream = await startNginxUpstream(processes, dir, [upA, upB], 0);
  const upstreamUrl = `http://127.0.0.1:${upA}`;
  const peers: Peer[] = [];
  if (selected('direct')) {
    peers.push({
      name: 'direct (nginx upstream)',
      url: `${upstreamUrl}/bench/hello`,
      pids: [upstream.pid ?? 0],
    });
  }

  if (selected('nginx')) {
    const proxyConf = join(dir, 'proxy.conf');
    writeFileSync(
      proxyConf,
      nginxConfig(
        dir,
        `  upstream backend { server 127.0.0.1:${upA}; keepalive 64; }`,
        `  server { listen 127.0.0.1:${nginxPort}; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
      ),
    );
    const nginx = processes.start('nginx proxy', 'nginx', ['-c', proxyConf, '-p', dir], 1);
    peers.push({
      name: 'nginx proxy_pass',
      url: `http://127.0.0.1:${nginxPort}/bench/hello`,
      pids: [nginx.pid ?? 0],
    });
  }
  for (const [key, name, file, port] of [
    ['minimal', 'minimal node:http + undici.Pool', 'minimal-proxy.ts', minimal],
    ['dispatch', 'bare node:http + undici dispatch', 'dispatch-proxy.ts', dispatch],
    ['http-proxy', 'http-proxy (keep-alive agent)', 'http-proxy.ts', httpProxyPort],
    ['fastify', '@fastify/http-proxy', 'fastify-proxy.ts', fastify],
  ] as const) {
    if (!selected(key)) continue;
    const script = join(ROOT, 'bench', 'proxy', file);
    const args = [...TSX_IMPORT, script, String(port), upstreamUrl];
    const child = processes.start(name, 'node', args, 1);
    peers.push({ name, url: `http://127.0.0.1:${port}/bench/hello`, pids: [child.pid ?? 0] });
  }

  // Loom: a real data plane fed by a real control plane (on core 0).
  if (selected('loom')) {
    const loom = await startLoomProxy(processes, {
      dir,
      upstreamPorts: [upA, upB],
      core: 1,
      controlPlaneCore: 0,
      accessLog: join(dir, 'access.log'),
    });
    peers.push({ name: 'Loom, all features on', url: loom.url, pids: [loom.child.pid ?? 0] });
  }
  if (selected('loom-quiet')) {
    const quiet = await startLoomProxy(processes, {
      dir,
      upstreamPorts: [upA, upB],
      core: 1,
      controlPlaneCore: 0,
    });
    peers.push({ name: 'Loom, access log off', url: quiet.url, pids: [quiet.child.pid ?? 0] });
  }
  if (selected('workers')) {
    // Not pinned: the primary and both workers may run on either core, next to wrk and the
    // upstream, so this row is not comparable to the pinned ones.
    const workers = await startLoomProxy(processes, {
      dir,
      upstreamPorts: [upA, upB],
      core: '0-1',
      controlPlaneCore: 0,
      accessLog: join(dir, 'access-workers.log'),
      extraArgs: ['--workers', '2'],
    });
    peers.push({
      name: 'Loom --workers 2, all features on (not pinned)',
      url: workers.url,
      pids: processTree(workers.child.pid ?? 0),
    });
  }
  for (const peer of peers) await waitForPort('127.0.0.1', Number(new URL(peer.url).port));
  return peers;
}

async function main(): Promise<void> {
  const loadBefore = loadAverage();
  const peers = await startPeers();
  for (const peer of peers) runWrk(peer.name, peer.url, peer.pids, '3s');
  const samples = new Map<string, Sample[]>(peers.map((peer) => [peer.name, []]));
  for (let round = 0; round < runs; round++) {
    for (const peer of peers) {
      samples.get(peer.name)?.push(runWrk(peer.name, peer.url, peer.pids, duration));
    }
  }
  const loadAfter = loadAverage();

  const results = peers.map((peer) => {
    const list = samples.get(peer.name) ?? [];
    return {
      name: peer.name,
      rps: Math.round(median(list.map((s) => s.rps))),
      p50Ms: median(list.map((s) => s.p50Ms)),
      p99Ms: median(list.map((s) => s.p99Ms)),
      cpuUsPerRequest: Number(median(list.map((s) => s.cpuUsPerRequest)).toFixed(1)),
      rssMb: Number(median(list.map((s) => s.rssMb)).toFixed(1)),
    };
  });
  const machine = {
    nproc: cpus().length,
    cpu: cpus()[0]?.model,
    node: process.version,
    command: `wrk -t1 -c50 -d${duration} --latency, ${runs} interleaved runs, median`,
    loadBefore,
    loadAfter,
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ machine, results })}\n`);
    return;
  }
  process.stdout.write(
    `${machine.nproc} cores, ${machine.cpu}, Node.js ${machine.node}; ${machine.command}; ` +
      `load average ${loadBefore.join(' ')} before, ${loadAfter.join(' ')} after\n\n`,
  );
  process.stdout.write(
    '| proxy | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB |\n| --- | ---: | ---: | ---: | ---: | ---: |\n',
  );
  for (const r of results) {
    const p50 = Number.isNaN(r.p50Ms) ? 'n/a' : r.p50Ms.toFixed(2);
    const p99 = Number.isNaN(r.p99Ms) ? 'n/a' : r.p99Ms.toFixed(2);
    process.stdout.write(
      `| ${r.name} | ${r.rps} | ${p50} | ${p99} | ${r.cpuUsPerRequest} | ${r.rssMb} |\n`,
    );
  }
}

process.on('SIGINT', () => {
  processes.stopAll();
  process.exit(130);
});
main()
  .catch((err: unknown) => {
    process.stderr.write(`benchmark failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    processes.stopAll();
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 500);
  });
