// Lists and kills the processes that tests started, so that a test file that times out or
// fails before its cleanup leaves none running. Reads /proc on Linux and runs `ps` elsewhere.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** One running process. */
export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** Process group id. */
  pgid: number;
  command: string;
}

/** Lists every process of this machine that has not exited; zombies are left out. */
export function listProcesses(): ProcessEntry[] {
  try {
    return listFromProc();
  } catch {
    return listFromPs();
  }
}

function listFromProc(): ProcessEntry[] {
  const entries: ProcessEntry[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    let command: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      command = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      continue; // The process exited during the scan.
    }
    // The fields after the command name, which may itself contain spaces and parentheses:
    // state, ppid, pgrp (proc(5)).
    const [state, ppid, pgid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z' || state === 'X') continue;
    entries.push({ pid: Number(name), ppid: Number(ppid), pgid: Number(pgid), command });
  }
  return entries;
}

function listFromPs(): ProcessEntry[] {
  const output = execFileSync('ps', ['-A', '-o', 'pid=,ppid=,pgid=,stat=,args='], {
    encoding: 'utf8',
  });
  return output.split('\n').flatMap((line): ProcessEntry[] => {
    const match = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!match || match[4]!.startsWith('Z')) return [];
    return [
      { pid: Number(match[1]), ppid: Number(match[2]), pgid: Number(match[3]), command: match[5]! },
    ];
  });
}

/** Returns the children of `pid`, their children, and so on. */
export function descendantsOf(pid: number, processes = listProcesses()): ProcessEntry[] {
  const byParent = new Map<number, ProcessEntry[]>();
  for (const entry of processes) {
    const siblings = byParent.get(entry.ppid) ?? [];
    siblings.push(entry);
    byParent.set(entry.ppid, siblings);
  }
  const found: ProcessEntry[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of byParent.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child.pid);
    }
  }
  return found;
}

/** Sends SIGKILL to each process; one that already exited is skipped. */
export function killAll(processes: ProcessEntry[]): void {
  for (const entry of processes) {
    try {
      process.kill(entry.pid, 'SIGKILL');
    } catch {
      // Exited since it was listed.
    }
  }
}

/** Formats processes as `pid command` lines for a message, commands cut at 200 characters. */
export function describeProcesses(processes: ProcessEntry[]): string {
  return processes.map((entry) => `  ${entry.pid} ${entry.command.slice(0, 200)}`).join('\n');
}
