// Splits the CPU time of a V8 CPU profile (`node --cpu-prof`) by component of the proxy's
// snapshot path, counting only the samples inside the windows that `proxy-cpu.ts --windows`
// wrote, and prints milliseconds per window (per change).
// Usage: tsx bench/propagation/profile-breakdown.ts PROFILE WINDOWS [PROFILE WINDOWS ...]
//   [--top 15] [--json]
// With several pairs (one per run), it prints the mean over every window of every run.
// Time is the count of samples times the median sampling interval, an estimate of the main
// thread's CPU time. The work of V8's other threads (concurrent compilation and marking) is not
// in the profile, but `process.cpuUsage` in `proxy-cpu.ts` counts it.
// Each sample goes to the component of its innermost frame that a rule below names. Node.js
// internals, such as `Buffer.compare`, count for the component that called them. Garbage
// collection and V8's own work (`(program)`: compilation, inline caches) have no caller in the
// profile, so they get rows of their own.
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Components by the path in a frame's URL, from specific to broad. The first match wins. */
const RULES: [component: string, pattern: RegExp][] = [
  ['router build', /\/data-plane\/router\//],
  ['table build (compileBindings)', /\/data-plane\/build-table\.ts/],
  ['route actions', /\/data-plane\/proxy\/route-actions\.ts/],
  ['snapshot decoder', /\/data-plane\/snapshot-client\/snapshot-decoder\.ts/],
  ['snapshot client', /\/data-plane\/snapshot-client\/snapshot-client\.ts/],
  ['protobuf decode', /@bufbuild\/protobuf|\/proto\/gen\//],
  ['table tracker', /\/observability\/table-tracker\.ts/],
  ['metrics', /\/observability\/|prom-client/],
  ['upstream registry', /\/data-plane\/upstreams\//],
  ['logging', /pino|\/common\/logger\.ts/],
  ['grpc-js', /@grpc\/grpc-js/],
  ['data plane apply', /\/data-plane\/data-plane\.ts/],
  ['bench harness', /\/bench\//],
];

/** Frames of shared helpers, whose time counts for the component that called them. */
const TRANSPARENT = /\/data-plane\/snapshot-client\/ordered-matcher\.ts/;

function componentOf(stack: CallFrame[]): string {
  for (let i = stack.length - 1; i >= 0; i--) {
    const { url, functionName } = stack[i];
    if (functionName === '(garbage collector)') return 'garbage collection';
    if (functionName === '(program)') return 'V8 (program)';
    if (functionName === '(idle)') return 'idle';
    if (url === '' || url.startsWith('node:') || TRANSPARENT.test(url)) continue;
    for (const [component, pattern] of RULES) {
      if (pattern.test(url)) return component;
    }
  }
  return 'other (Node.js internals, microtasks)';
}

const argv = process.argv.slice(2);
const topIndex = argv.indexOf('--top');
const top = topIndex === -1 ? 15 : Number(argv[topIndex + 1]);
const paths = argv.filter(
  (arg, index) => !arg.startsWith('--') && (topIndex === -1 || index !== topIndex + 1),
);
if (paths.length === 0 || paths.length % 2 !== 0) {
  throw new Error(
    'usage: profile-breakdown.ts PROFILE WINDOWS [PROFILE WINDOWS ...] [--top 15] [--json]',
  );
}

const componentUs = new Map<string, number>();
const selfUs = new Map<string, number>();
let windowCount = 0;
for (let pair = 0; pair < paths.length; pair += 2) {
  const profile = JSON.parse(readFileSync(paths[pair], 'utf8')) as CpuProfile;
  const windows = JSON.parse(readFileSync(paths[pair + 1], 'utf8')) as [number, number][];
  windowCount += windows.length;
  addSamples(profile, windows);
}

/** Adds the time of the samples of `profile` that lie inside `windows` to the totals. */
function addSamples(profile: CpuProfile, windows: [number, number][]): void {
  const describe = frameDescriber(profile);
  // Each sample counts for the median interval, not for the time since the previous sample, so
  // that time the thread spent descheduled on a busy machine does not count as CPU time.
  const sortedDeltas = [...profile.timeDeltas].sort((a, b) => a - b);
  const weight = sortedDeltas[sortedDeltas.length >> 1] ?? 0;
  let time = profile.startTime;
  let windowIndex = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    time += profile.timeDeltas[i];
    while (windowIndex < windows.length && windows[windowIndex][1] < time) windowIndex++;
    if (windowIndex === windows.length) break;
    if (time < windows[windowIndex][0]) continue;
    const { component, self } = describe(profile.samples[i]);
    if (component === 'idle') continue;
    componentUs.set(component, (componentUs.get(component) ?? 0) + weight);
    const key = `${component} | ${self}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + weight);
  }
}

/** Returns a function that names the component and the function of a profile node, cached. */
function frameDescriber(profile: CpuProfile): (id: number) => { component: string; self: string } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parentOf.set(child, node.id);
  }
  const cache = new Map<number, { component: string; self: string }>();
  return (id) => {
    let cached = cache.get(id);
    if (cached !== undefined) return cached;
    const stack: CallFrame[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      stack.unshift(byId.get(at)!.callFrame);
    }
    const leaf = stack[stack.length - 1];
    const file = leaf.url.replace(/^.*\/(node_modules\/)?/, '');
    cached = {
      component: componentOf(stack),
      self: `${leaf.functionName || '(anonymous)'} ${file}:${leaf.lineNumber + 1}`,
    };
    cache.set(id, cached);
    return cached;
  };
}

const perChange = (us: number) => Number((us / 1e3 / windowCount).toFixed(2));
const total = [...componentUs.values()].reduce((a, b) => a + b, 0);
const components = [...componentUs]
  .sort((a, b) => b[1] - a[1])
  .map(([component, us]) => ({ component, msPerChange: perChange(us) }));
const functions = [...selfUs]
  .sort((a, b) => b[1] - a[1])
  .slice(0, top)
  .map(([name, us]) => ({ function: name, msPerChange: perChange(us) }));
const result = {
  windows: windowCount,
  totalMsPerChange: perChange(total),
  components,
  functions,
};

if (argv.includes('--json')) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  process.stdout.write(`${windowCount} changes, ${result.totalMsPerChange} ms per change\n`);
  for (const row of components) {
    process.stdout.write(`${row.msPerChange.toFixed(2).padStart(8)}  ${row.component}\n`);
  }
  process.stdout.write('\ntop functions by self time, ms per change:\n');
  for (const row of functions) {
    process.stdout.write(`${row.msPerChange.toFixed(2).padStart(8)}  ${row.function}\n`);
  }
}
