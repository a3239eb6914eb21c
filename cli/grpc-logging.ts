import { setLogger } from '@grpc/grpc-js';

/**
 * Start of the line that grpc-js 1.14 logs at ERROR level when a server binds
 * none of its addresses. It then rejects `bindAsync` with the same text and the
 * reason, which `describeListenError` turns into a message that names the
 * address and the flag.
 */
const BIND_FAILURE_LINE = 'No address added out of total ';

/**
 * Installs a grpc-js logger that drops the bind-failure line and writes every
 * other grpc-js line as grpc-js's default logger does (`E `, `I ` or `D ` and
 * the text, on standard error). `GRPC_VERBOSITY` and `GRPC_TRACE` keep working,
 * because grpc-js applies them before it calls the logger.
 *
 * NOTE: the line is recognised by its text, the only form grpc-js gives it.
 * When a grpc-js release rewords it, the line shows again next to Loom's message.
 */
export function installGrpcLogger(): void {
  setLogger({
    error: (message: unknown, ...rest: unknown[]) => {
      if (typeof message === 'string' && message.startsWith(BIND_FAILURE_LINE)) return;
      console.error(`E ${String(message)}`, ...rest);
    },
    info: (message: unknown, ...rest: unknown[]) => console.error(`I ${String(message)}`, ...rest),
    debug: (message: unknown, ...rest: unknown[]) => console.error(`D ${String(message)}`, ...rest),
  });
}
