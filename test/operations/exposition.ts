// A parser of the Prometheus text exposition format (version 0.0.4), strict enough to catch
// malformed output: every sample must belong to a family announced by a TYPE line.

/** One sample line. */
export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One metric family: its TYPE, HELP and samples. */
export interface MetricFamily {
  name: string;
  type: string;
  help: string;
  samples: ParsedSample[];
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \d+)?$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

function parseValue(text: string, line: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN' || text === 'Nan') return NaN;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`invalid sample value in line: ${line}`);
  return value;
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL_PAIR.lastIndex = 0;
  while (LABEL_PAIR.lastIndex < text.length) {
    const match = LABEL_PAIR.exec(text);
    if (match === null) throw new Error(`invalid labels in line: ${line}`);
    labels[match[1]] = match[2].replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
  }
  return labels;
}

/** Finds the family of a sample: histogram and summary samples carry a suffix. */
function familyOf(families: Map<string, MetricFamily>, name: string): MetricFamily | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const family = families.get(name.slice(0, -suffix.length));
      if (family && (family.type === 'histogram' || family.type === 'summary')) return family;
    }
  }
  return undefined;
}

/** Parses a whole exposition; throws naming the first malformed line. */
export function parseExposition(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      const [name, ...help] = line.slice(7).split(' ');
      const family = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      family.help = help.join(' ');
      families.set(name, family);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      const family = families.get(name) ?? { name, type, help: '', samples: [] };
      family.type = type;
      families.set(name, family);
      continue;
    }
    if (line.startsWith('#')) continue;

    const match = SAMPLE_LINE.exec(line);
    if (match === null) throw new Error(`malformed exposition line: ${line}`);
    const name = match[1];
    const family = familyOf(families, name);
    if (family === undefined) throw new Error(`sample without a TYPE line: ${line}`);
    family.samples.push({
      name,
      labels: match[3] ? parseLabels(match[3], line) : {},
      value: parseValue(match[4], line),
    });
  }
  return families;
}

/**
 * Returns the value of the sample `name` whose labels include `labels`, or undefined when no
 * such sample exists. Several matches are summed.
 */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = familyOf(families, name);
  if (family === undefined) return undefined;
  let found = false;
  let sum = 0;
  for (const sample of family.samples) {
    if (sample.name !== name) continue;
    if (Object.entries(labels).every(([key, value]) => sample.labels[key] === value)) {
      found = true;
      sum += sample.value;
    }
  }
  return found ? sum : undefined;
}

/** Fetches and parses `GET /metrics` from an admin address. */
export async function scrape(url: string): Promise<Map<string, MetricFamily>> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (response.status !== 200) throw new Error(`GET ${url} returned ${response.status}`);
  const contentType = response.headers.get('content-type') ?? '';
  if (!contentType.startsWith('text/plain; version=0.0.4')) {
    throw new Error(`GET ${url} returned content-type ${contentType}`);
  }
  return parseExposition(await response.text());
}
