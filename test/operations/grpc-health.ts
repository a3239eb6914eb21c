// A client of the standard gRPC health-checking service (grpc.health.v1.Health) for tests.
import {
  credentials,
  makeClientConstructor,
  status,
  type Client,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { service } from 'grpc-health-check';

interface HealthClient extends Client {
  Check(
    request: { service: string },
    options: { deadline: number },
    callback: (error: ServiceError | null, response?: { status: string }) => void,
  ): void;
}

const HealthClientConstructor = makeClientConstructor(
  service as unknown as ServiceDefinition,
  'grpc.health.v1.Health',
);

/**
 * Calls `Health.Check` for `serviceName` on `address` and returns the status name (`SERVING`,
 * `NOT_SERVING`), or `NOT_FOUND` when the server does not know the service.
 */
export async function checkGrpcHealth(address: string, serviceName = ''): Promise<string> {
  const client = new HealthClientConstructor(
    address,
    credentials.createInsecure(),
  ) as unknown as HealthClient;
  try {
    return await new Promise<string>((resolve, reject) => {
      const deadline = Date.now() + 5_000;
      client.Check({ service: serviceName }, { deadline }, (error, response) => {
        if (error?.code === status.NOT_FOUND) resolve('NOT_FOUND');
        else if (error) reject(error);
        else resolve(response?.status ?? 'UNKNOWN');
      });
    });
  } finally {
    client.close();
  }
}
