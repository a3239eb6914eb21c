import { Metadata, status, type ChannelOptions, type ServiceError } from '@grpc/grpc-js';

import { LoomError } from '../common/errors.js';
import { fromServiceError } from '../common/grpc-errors.js';
import { clientCredentials, serverNameChannelOptions, type ClientTlsFiles } from '../common/tls.js';
import {
  AdminServiceClient,
  type ApplyRequest,
  type ApplyResponse,
  type DeleteRequest,
  type DeleteResponse,
  type GetConfigResponse,
  type StatusRequest,
  type StatusResponse,
} from '../proto/gen/loom/v1/admin.js';

/** Default control-plane address of loomctl. */
export const DEFAULT_CONTROL_PLANE = '127.0.0.1:7400';

/** Milliseconds an admin call may take before loomctl gives up, unless the call sets less. */
const CALL_TIMEOUT_MS = 30_000;

/** Largest message in either direction: a configuration of 100,000 routes fits with headroom. */
const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** Credentials of admin calls: TLS settings and a bearer token, each optional. */
export interface AdminConnection {
  tls?: ClientTlsFiles;
  token?: string;
}

let defaultConnection: AdminConnection = {};

/** Sets the credentials of clients created without their own; loomctl sets them from its flags. */
export function setDefaultAdminConnection(connection: AdminConnection): void {
  defaultConnection = connection;
}

/** Promise wrapper of the AdminService that converts gRPC errors into LoomErrors. */
export class AdminClient {
  readonly address: string;
  readonly #client: AdminServiceClient;
  readonly #token: string | undefined;
  #writeSent = false;

  /**
   * Creates a client of the control plane at `address`. `channelOptions` adds gRPC channel
   * options, such as `grpc.use_local_subchannel_pool`.
   *
   * @throws LoomError `LOOM_INVALID_ARGUMENT` when a TLS file cannot be read.
   */
  constructor(
    address: string,
    connection: AdminConnection = defaultConnection,
    channelOptions: ChannelOptions = {},
  ) {
    this.address = address;
    this.#token = connection.token;
    this.#client = new AdminServiceClient(address, clientCredentials(connection.tls), {
      ...channelOptions,
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      ...serverNameChannelOptions(connection.tls),
    });
  }

  /**
   * True once this client sent an apply that is not a dry run, or a delete. Until then a lost
   * connection cannot have left a write of this client stored.
   */
  get writeSent(): boolean {
    return this.#writeSent;
  }

  apply(request: ApplyRequest): Promise<ApplyResponse> {
    if (!request.dryRun) this.#writeSent = true;
    return this.#call(
      this.#client.apply.bind(this.#client) as Unary<ApplyRequest, ApplyResponse>,
      request,
    );
  }

  getConfig(): Promise<GetConfigResponse> {
    return this.#call(
      this.#client.getConfig.bind(this.#client) as Unary<object, GetConfigResponse>,
      {},
    );
  }

  delete(request: DeleteRequest): Promise<DeleteResponse> {
    this.#writeSent = true;
    return this.#call(
      this.#client.delete.bind(this.#client) as Unary<DeleteRequest, DeleteResponse>,
      request,
    );
  }

  /** Reads the status; `timeoutMs` bounds this call below the default deadline. */
  status(
    request: StatusRequest = { version: 0 },
    timeoutMs = CALL_TIMEOUT_MS,
  ): Promise<StatusResponse> {
    const method = this.#client.status.bind(this.#client) as Unary<StatusRequest, StatusResponse>;
    return this.#call(method, request, timeoutMs);
  }

  close(): void {
    this.#client.close();
  }

  #call<Req, Res>(
    method: Unary<Req, Res>,
    request: Req,
    timeoutMs = CALL_TIMEOUT_MS,
  ): Promise<Res> {
    const deadline = new Date(Date.now() + Math.min(timeoutMs, CALL_TIMEOUT_MS));
    return new Promise((resolve, reject) => {
      const metadata = new Metadata();
      if (this.#token !== undefined) metadata.set('authorization', `Bearer ${this.#token}`);
      method(request, metadata, { deadline }, (error, response) => {
        if (error) reject(describeTooLarge(error) ?? fromServiceError(error));
        else resolve(response);
      });
    });
  }
}

/** grpc-js 1.14's message, from either end, when a message is over the receiver's limit. */
const TOO_LARGE = /^Received message larger than max \((\d+) vs (\d+)\)$/;

/**
 * Returns an error that names both limits and the fix for a message over a gRPC size limit,
 * or undefined for other errors. grpc-js words it the same whichever end rejected it.
 */
function describeTooLarge(error: ServiceError): LoomError | undefined {
  const match = error.code === status.RESOURCE_EXHAUSTED ? TOO_LARGE.exec(error.details) : null;
  if (match === null) return undefined;
  return new LoomError(
    'LOOM_RESOURCE_EXHAUSTED',
    `a gRPC message of ${match[1]} bytes is over the limit of ${match[2]} bytes ` +
      `(the control plane's --max-message-bytes, or loomctl's ${MAX_MESSAGE_BYTES} bytes); ` +
      'apply the configuration in smaller parts, or raise --max-message-bytes of ' +
      '"loom control-plane"',
    { cause: error },
  );
}
