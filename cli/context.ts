import type { Command } from 'commander';

import { parseHostPort } from '../common/address.js';
import { LoomError } from '../common/errors.js';
import { AdminClient, DEFAULT_CONTROL_PLANE } from './admin-client.js';

/**
 * Exit codes of loomctl. `diff` exits `changes` (2) when the files differ
 * from the store. `apply --wait` exits `notConverged` (3) when the write was
 * committed but a proxy nacked it or did not apply it in time.
 */
export const EXIT = { ok: 0, error: 1, usage: 2, changes: 2, notConverged: 3 } as const;

/** Exit-code text shared by the help of every command. */
export const EXIT_HELP =
  '\nExit codes: 0 success; 1 error (invalid config, unreachable control plane, version conflict);\n' +
  '2 usage error, or "diff" found changes; 3 "apply --wait": committed, but a proxy nacked\n' +
  'the version or did not apply it before the timeout.\n';

/** An error that ends loomctl with a given exit code after its message. */
export class ExitError extends Error {
  readonly exitCode: number;

  constructor(exitCode: number, message: string) {
    super(message);
    this.name = 'ExitError';
    this.exitCode = exitCode;
  }
}

/** Returns the control-plane address: `--control-plane`, then LOOM_CONTROL_PLANE, then the default. */
export function controlPlaneAddress(command: Command): string {
  const options = command.optsWithGlobals<{ controlPlane?: string }>();
  const address = options.controlPlane ?? process.env.LOOM_CONTROL_PLANE ?? DEFAULT_CONTROL_PLANE;
  // Checked before dialing: a bare "7400" would otherwise be looked up as a host name.
  parseHostPort(address, 'control-plane address');
  return address;
}

/** Opens an admin client for one command and closes it afterwards; explains an unreachable address. */
export async function withClient<T>(
  command: Command,
  action: (client: AdminClient) => Promise<T>,
): Promise<T> {
  const client = new AdminClient(controlPlaneAddress(command));
  try {
    return await action(client);
  } catch (error) {
    if (error instanceof LoomError && error.code === 'LOOM_UNAVAILABLE') {
      throw new LoomError(
        'LOOM_UNAVAILABLE',
        `cannot reach the control plane at ${client.address}: ${error.message}\n` +
          'Is "loom control-plane" running there? Set --control-plane or LOOM_CONTROL_PLANE to its gRPC\n' +
          'address (its --listen, default 127.0.0.1:7400), not its HTTP --admin-listen port.',
      );
    }
    throw error;
  } finally {
    client.close();
  }
}

/** Parses a positive integer option such as `--if-version`. */
export function parsePositiveInteger(flag: string) {
  return (value: string): number => {
    const number = Number(value);
    if (!Number.isSafeInteger(number) || number < 1) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid ${flag} "${value}"; expected a positive integer`,
      );
    }
    return number;
  };
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)?$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000 };

/** Parses a duration such as `30s`, `500ms`, `2m` or `10` (seconds) into milliseconds. */
export function parseDuration(flag: string) {
  return (value: string): number => {
    const match = DURATION.exec(value.trim());
    const ms = match ? Number(match[1]) * DURATION_UNITS[match[2] ?? 's'] : NaN;
    if (!Number.isFinite(ms) || ms <= 0) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid ${flag} "${value}"; expected a duration such as 30s, 500ms or 2m`,
      );
    }
    return Math.round(ms);
  };
}
