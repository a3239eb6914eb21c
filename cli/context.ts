import { status, type ServiceError } from '@grpc/grpc-js';
import { InvalidArgumentError, type Command } from 'commander';

import { parseDialAddress } from '../common/address.js';
import { LoomError } from '../common/errors.js';
import { tidyGrpcDetails } from '../common/grpc-errors.js';
import { AdminClient, DEFAULT_CONTROL_PLANE } from './admin-client.js';
import { parseFlagDuration } from './duration.js';

/**
 * Exit codes of loomctl. `diff` exits `changes` (2) when the files differ
 * from the store. `apply --wait` exits `notConverged` (3) when the write was
 * committed but a proxy nacked it or did not apply it in time. It exits
 * `proxyDisconnected` (4) when every connected proxy applied it but a proxy
 * disconnected during the wait before applying it. It exits `interrupted`
 * (130, as shells report SIGINT) when Ctrl-C stopped the wait.
 */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  changes: 2,
  notConverged: 3,
  proxyDisconnected: 4,
  interrupted: 130,
} as const;

/** Exit-code text of `loomctl --help`, which covers every command. */
export const EXIT_HELP =
  '\nExit codes:\n' +
  '  0  success; for "diff", nothing would change\n' +
  '  1  error: invalid configuration, unreachable control plane, version conflict,\n' +
  '     resource not found\n' +
  '  2  usage error (unknown flag, missing argument, invalid value); for "diff",\n' +
  '     something would change\n' +
  '  3  "apply --wait": the write was committed, but a proxy nacked the version or\n' +
  '     did not apply it before the timeout\n' +
  '  4  "apply --wait": every connected proxy applied the version, but a proxy\n' +
  '     disconnected during the wait before applying it\n' +
  '  130  "apply --wait" interrupted by Ctrl-C: the write was committed, only the\n' +
  '       wait stopped\n';

/**
 * Formats the exit codes of one command for its help: 0, then 1 for `errors` (the failures of
 * that command, none when undefined), then 2 for a usage error, then `extra` lines.
 */
export function exitHelp(success: string, errors?: string, extra: string[] = []): string {
  return (
    '\nExit codes:\n' +
    `  0  ${success}\n` +
    (errors === undefined ? '' : `  1  error: ${errors}\n`) +
    '  2  usage error (unknown flag, missing argument, invalid value)\n' +
    extra.map((line) => `${line}\n`).join('')
  );
}

/** An error that ends loomctl with a given exit code after its message. */
export class ExitError extends Error {
  readonly exitCode: number;

  constructor(exitCode: number, message: string) {
    super(message);
    this.name = 'ExitError';
    this.exitCode = exitCode;
  }
}

/**
 * Returns the control-plane address: `--control-plane`, then LOOM_CONTROL_PLANE, then the default.
 * Throws an ExitError with the usage exit code (2) when the address is not HOST:PORT.
 */
export function controlPlaneAddress(command: Command): string {
  const options = command.optsWithGlobals<{ controlPlane?: string }>();
  const address = options.controlPlane ?? process.env.LOOM_CONTROL_PLANE ?? DEFAULT_CONTROL_PLANE;
  const source = command.parent?.getOptionValueSource('controlPlane');
  let option = options.controlPlane !== undefined ? '--control-plane' : 'LOOM_CONTROL_PLANE';
  if (source === 'config') option = 'controlPlane of the loomctl config';
  if (address.includes('://')) {
    throw new ExitError(
      EXIT.usage,
      `invalid ${option} ${JSON.stringify(address)}; expected HOST:PORT such as ` +
        '127.0.0.1:7400, without a scheme (TLS is set with --tls-ca)',
    );
  }
  // Checked before dialing: a bare "7400" would otherwise be looked up as a host name.
  try {
    parseDialAddress(address, option);
  } catch (error) {
    if (error instanceof LoomError) throw new ExitError(EXIT.usage, error.message);
    throw error;
  }
  return address;
}

/** Advice for an address where no control plane serves its gRPC API. */
const WRONG_PORT_HINT =
  'Is "loom control-plane" running there? Set --control-plane or LOOM_CONTROL_PLANE\n' +
  'to its gRPC address (its --listen, default 127.0.0.1:7400), not its HTTP\n' +
  '--admin-listen port.';

/**
 * Tells whether a call failed because the server is not a control plane: a gRPC server without
 * the admin service, such as etcd, or an HTTP/2 server that sends an HTTP error status, which
 * grpc-js 1.14 reports as UNIMPLEMENTED. A control plane that lacks one method of the service
 * is left alone, because that means another release.
 */
function isOtherServer(error: unknown): error is LoomError {
  if (!(error instanceof LoomError) || error.code !== 'LOOM_INTERNAL') return false;
  const cause = error.cause as Partial<ServiceError> | undefined;
  if (cause?.code !== status.UNIMPLEMENTED) return false;
  const details = cause.details ?? '';
  return (
    details.startsWith('unknown service loom.v1.AdminService') ||
    details.startsWith('Received HTTP status code')
  );
}

/** A write that a command sends, for the message when the connection is lost during it. */
export interface ClientWrite {
  /** The write, such as `apply`. */
  name: string;
  /** How to find out whether the write was stored, as a clause such as `run "..." to see`. */
  check: string;
}

/**
 * Opens an admin client for one command and closes it afterwards; explains an unreachable address.
 * `write` describes the write the command sends, if any.
 */
export async function withClient<T>(
  command: Command,
  action: (client: AdminClient) => Promise<T>,
  write?: ClientWrite,
): Promise<T> {
  const client = new AdminClient(controlPlaneAddress(command));
  try {
    return await action(client);
  } catch (error) {
    if (error instanceof LoomError && error.code === 'LOOM_UNAVAILABLE') {
      if (error.message.includes('ERR_TLS_CERT_ALTNAME_INVALID')) {
        throw serverNameMismatch(client.address, error);
      }
      // OpenSSL's text for the TLS 1.3 alert certificate_required (116) of a mutual-TLS server.
      if (error.message.includes('alert certificate required')) {
        throw clientCertificateMissing(client.address, error);
      }
      if (wasSent(error)) {
        throw connectionLost(client.address, error, client.writeSent ? write : undefined, write);
      }
      throw new LoomError(
        'LOOM_UNAVAILABLE',
        `cannot reach the control plane at ${client.address}: ${tidyGrpcDetails(error.message)}\n` +
          WRONG_PORT_HINT,
      );
    }
    if (isOtherServer(error)) {
      throw new LoomError(
        'LOOM_UNAVAILABLE',
        `the server at ${client.address} is not a Loom control plane: ${error.message}\n` +
          WRONG_PORT_HINT,
        { cause: error },
      );
    }
    throw error;
  } finally {
    client.close();
  }
}

/**
 * Returns whether a call failed after grpc-js sent it on an open connection. grpc-js 1.14 reports
 * a connection closed during a call as `Connection dropped`, or as `read ECONNRESET` or
 * `read ETIMEDOUT` after a reset or a timeout, and adds `remote_addr=` to the deadline message of
 * a call that was sent. A call that never found a connection gets `No connection established`.
 *
 * NOTE: these are grpc-js's message texts; another grpc-js release may word them differently, and
 * the error then gets the message of an unreachable address.
 */
function wasSent(error: LoomError): boolean {
  return (
    /^(Connection dropped|read ECONNRESET|read ETIMEDOUT)/.test(error.message) ||
    error.message.includes('remote_addr=')
  );
}

/**
 * Explains a call whose connection was lost after it was sent. The control plane was reachable,
 * so the advice about a wrong address does not apply. `sent` is the write the command sent
 * before the connection was lost, which may have been stored. `planned` is the write the command
 * would have sent: a connection lost before it was sent wrote nothing.
 */
function connectionLost(
  address: string,
  error: LoomError,
  sent: ClientWrite | undefined,
  planned: ClientWrite | undefined,
): LoomError {
  const details = tidyGrpcDetails(error.message);
  let lost: string;
  let next: string;
  if (sent !== undefined) {
    lost = `during the ${sent.name}`;
    next = `it may have written the ${sent.name} before that, or not; ${sent.check}.`;
  } else if (planned !== undefined) {
    lost = `before the ${planned.name} was sent`;
    next = 'nothing was written. Run the command again once it answers.';
  } else {
    lost = 'during the call';
    next = 'run the command again once it answers.';
  }
  return new LoomError(
    'LOOM_UNAVAILABLE',
    `the connection to the control plane at ${address} was lost ${lost}: ${details}\n` +
      `The control plane may have stopped or restarted; ${next}`,
    { cause: error },
  );
}

/**
 * Explains a certificate that does not name the dialed host, as when loomctl dials 127.0.0.1
 * through `kubectl port-forward`, and names the flag that fixes it.
 */
function serverNameMismatch(address: string, error: LoomError): LoomError {
  return new LoomError(
    'LOOM_UNAVAILABLE',
    `TLS handshake with the control plane at ${address} failed: ` +
      `${tidyGrpcDetails(error.message).replace(/[\s:]+$/, '')}\n` +
      "The control plane's certificate does not name the host of --control-plane. Through\n" +
      'kubectl port-forward or another tunnel, pass --tls-server-name NAME (or set\n' +
      'LOOM_TLS_SERVER_NAME) to a name the certificate carries, such as\n' +
      'loom-control-plane.loom.svc.',
    { cause: error },
  );
}

/** Explains a control plane that requires a client certificate, and names where to set one. */
function clientCertificateMissing(address: string, error: LoomError): LoomError {
  return new LoomError(
    'LOOM_UNAVAILABLE',
    `the control plane at ${address} requires a client certificate (mutual TLS): ` +
      `${tidyGrpcDetails(error.message).replace(/[\s:]+$/, '')}\n` +
      'Pass --tls-cert FILE and --tls-key FILE, or set tls.cert and tls.key in the loomctl\n' +
      'config file, with a certificate signed by a CA of its --tls-client-ca.',
    { cause: error },
  );
}

/**
 * Parses the version of `--if-version`: an integer of 0 or more. Throws commander's
 * InvalidArgumentError, so a bad value is a usage error (exit 2).
 */
export function parseIfVersion(value: string): number {
  const number = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(number)) {
    throw new InvalidArgumentError(
      '--if-version expects a version that "loomctl get" printed, such as 12, ' +
        'or 0 to write only to a store without routes or upstreams.',
    );
  }
  return number;
}

/**
 * Parses the NAME argument of `get` and `delete`. Throws commander's InvalidArgumentError for an
 * empty or blank name, so it is a usage error (exit 2) instead of a lookup that finds nothing.
 */
export function parseResourceName(value: string): string {
  if (value.trim() === '') {
    throw new InvalidArgumentError(
      'A route or upstream name must not be empty or blank. Pass the name of a stored ' +
        'resource, as "loomctl get routes" or "loomctl get upstreams" lists them.',
    );
  }
  return value;
}

/**
 * Returns a commander parser of a duration flag (see `parseFlagDuration`), whose error is a
 * usage error. The duration must be above 0.
 */
export function parseDuration(flag: string) {
  return (value: string): number => {
    try {
      return parseFlagDuration(value, flag);
    } catch (error) {
      if (!(error instanceof LoomError)) throw error;
      // Commander's message already names the flag and the value.
      const reason = error.message.slice(`invalid ${flag} ${JSON.stringify(value)}: `.length);
      throw new InvalidArgumentError(`${reason.charAt(0).toUpperCase()}${reason.slice(1)}.`);
    }
  };
}
