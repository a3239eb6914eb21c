// Counts the requests that fail while a proxy listener drains under keep-alive load.
//
// Each trial starts a Loom proxy listener (`createProxyServer`, as a worker runs it) with the
// `HttpDrainer` of the workers, in front of a `node:http` upstream on 127.0.0.1. Clients share
// a keep-alive `http.Agent` and send GET requests in a loop, each waiting a random think time
// between requests. After a random warm-up the drain starts; the clients keep going until the
// drain finished. Every failure is sorted by its error code. ECONNREFUSED means that a new
// connection found the listener closed, so the request never left the client. A reset or
// "socket hang up" means that a request sent on a connection got no response.
//
// Usage: tsx bench/proxy/drain-race.ts [TRIALS] [CLIENTS] [MAX_THINK_MS]
// Defaults: 20 trials, 16 clients, 5 ms. A trial runs for at most 10 s.
import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import { pino } from 'pino';

import { HttpDrainer } from '../../data-plane/lifecycle/drain.js';
import { startHttpServer, startProxy } from '../../test/proxy/harness.js';

const trials = Number(process.argv[2] ?? 20);
const clients = Number(process.argv[3] ?? 16);
const maxThinkMs = Number(process.argv[4] ?? 5);
/** Maximum length of a trial, in milliseconds, after which the loops stop whatever happened. */
const TRIAL_LIMIT_MS = 10_000;
const DRAIN_TIMEOUT_MS = 5_000;

interface Outcome {
  ok: number;
  refused: number;
  /** Requests sent on an open connection that got no response, by error code. */
  lost: Record<string, number>;
  /** Time from the start of the drain to each lost request's failure, in milliseconds. */
  lostAtMs: number[];
}

function get(port: number, agent: Agent): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/x', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? 'ok' : `status ${res.statusCode}`));
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? err.message;
      // A new connection that the listener's backlog held when it closed is reset too.
      resolve(code === 'ECONNREFUSED' || req.reusedSocket ? code : `${code} on a new connection`);
    });
    req.end();
  });
}

async function trial(outcome: Outcome): Promise<void> {
  const upstream = await startHttpServer((_req, res) => res.end('ok'));
  const proxy = await startProxy();
  proxy.publishOne('app', upstream.port);
  const drainer = new HttpDrainer(proxy.server, pino({ level: 'silent' }));
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const started = performance.now();
  let drained = false;
  let drainStart = 0;

  const loop = async (): Promise<void> => {
    while (!drained && performance.now() - started < TRIAL_LIMIT_MS) {
      const result = await get(proxy.port, agent);
      if (result === 'ok') outcome.ok++;
      else if (result === 'ECONNREFUSED') outcome.refused++;
      else {
        outcome.lost[result] = (outcome.lost[result] ?? 0) + 1;
        outcome.lostAtMs.push(Math.round(performance.now() - drainStart));
      }
      await sleep(Math.random() * maxThinkMs);
    }
  };
  const loops = Array.from({ length: clients }, loop);

  await sleep(200 + Math.random() * 100);
  drainStart = performance.now();
  await drainer.drain(DRAIN_TIMEOUT_MS);
  drained = true;
  await Promise.all(loops);
  agent.destroy();
  await proxy.close();
  await upstream.close();
}

const outcome: Outcome = { ok: 0, refused: 0, lost: {}, lostAtMs: [] };
for (let i = 0; i < trials; i++) await trial(outcome);
const lost = Object.values(outcome.lost).reduce((sum, count) => sum + count, 0);
process.stdout.write(
  `${trials} trials, ${clients} clients, think time 0 to ${maxThinkMs} ms: ` +
    `${outcome.ok} ok, ${outcome.refused} refused, ${lost} lost ${JSON.stringify(outcome.lost)}` +
    (lost > 0 ? `, ${describeTimes(outcome.lostAtMs)} into the drain` : '') +
    '\n',
);

function describeTimes(times: number[]): string {
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return `at ${sorted[0]} to ${sorted[sorted.length - 1]} ms (median ${median} ms)`;
}
