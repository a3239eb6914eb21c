import { readFileSync } from 'node:fs';

/** CPU time used by a process so far, in milliseconds (user + system), from /proc. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / CLOCK_TICKS;
}

/** CPU time this process has used so far, all threads, in milliseconds. */
export function ownCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e3;
}

/**
 * CPU time of this process's main thread so far, in milliseconds, from the scheduler's
 * nanosecond count in /proc (Linux). The rest of `ownCpuMs` is V8's and libuv's other threads:
 * concurrent compilation, parallel and concurrent garbage collection. Undefined where /proc has
 * no schedstat.
 */
export function mainThreadMs(): number | undefined {
  try {
    const schedstat = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8');
    return Number(schedstat.split(' ')[0]) / 1e6;
  } catch {
    return undefined;
  }
}

/** Resident memory of a process in MiB, from /proc. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kib / 1024;
}

/** Available memory of the machine in MiB, from /proc. */
export function availableMiB(): number {
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  return Number(/MemAvailable:\s+(\d+)/.exec(meminfo)?.[1] ?? 0) / 1024;
}

// USER_HZ is 100 on every Linux architecture Node supports.
const CLOCK_TICKS = 100;
