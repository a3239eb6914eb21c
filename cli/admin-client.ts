import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';

import { fromServiceError } from '../common/grpc-errors.js';
import {
  AdminServiceClient,
  type ApplyRequest,
  type ApplyResponse,
  type DeleteRequest,
  type DeleteResponse,
  type GetConfigResponse,
  type StatusResponse,
} from '../proto/gen/loom/v1/admin.js';

/** Default control-plane address of loomctl. */
export const DEFAULT_CONTROL_PLANE = '127.0.0.1:7400';

/** Seconds an admin call may take before loomctl gives up. */
const CALL_TIMEOUT_SECONDS = 30;

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** Promise wrapper of the AdminService that converts gRPC errors into LoomErrors. */
export class AdminClient {
  readonly address: string;
  readonly #client: AdminServiceClient;

  constructor(address: string) {
    this.address = address;
    this.#client = new AdminServiceClient(address, credentials.createInsecure(), {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      'grpc.max_send_message_length': 256 * 1024 * 1024,
    });
  }

  apply(request: ApplyRequest): Promise<ApplyResponse> {
    return this.#call(this.#client.apply.bind(this.#client) as Unary<ApplyRequest, ApplyResponse>, request);
  }

  getConfig(): Promise<GetConfigResponse> {
    return this.#call(this.#client.getConfig.bind(this.#client) as Unary<object, GetConfigResponse>, {});
  }

  delete(request: DeleteRequest): Promise<DeleteResponse> {
    return this.#call(this.#client.delete.bind(this.#client) as Unary<DeleteRequest, DeleteResponse>, request);
  }

  status(): Promise<StatusResponse> {
    return this.#call(this.#client.status.bind(this.#client) as Unary<object, StatusResponse>, {});
  }

  close(): void {
    this.#client.close();
  }

  #call<Req, Res>(method: Unary<Req, Res>, request: Req): Promise<Res> {
    const deadline = new Date(Date.now() + CALL_TIMEOUT_SECONDS * 1000);
    return new Promise((resolve, reject) => {
      method(request, new Metadata(), { deadline }, (error, response) => {
        if (error) reject(fromServiceError(error));
        else resolve(response);
      });
    });
  }
}
