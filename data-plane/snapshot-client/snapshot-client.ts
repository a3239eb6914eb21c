import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';

import { randomUUID } from 'node:crypto';

import { Backoff } from '../../common/backoff.js';
import { fromServiceError, tidyGrpcDetails } from '../../common/grpc-errors.js';
import type { Logger } from '../../common/logger.js';
import {
  loadClientTls,
  serverNameChannelOptions,
  type CertificateSummary,
  type ClientTlsFiles,
} from '../../common/tls.js';
import {
  SnapshotServiceService,
  type Nack,
  type StreamRequest,
} from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { DEFAULT_SLICE_MS } from '../router/router.js';
import { probeClientCertificate } from './handshake-probe.js';
import { SnapshotDecoder } from './snapshot-decoder.js';

/** Time a stream ended after a malformed message has to deliver earlier acks, in ms. */
const STREAM_CLOSE_GRACE_MS = 1_000;

/** Largest snapshot message a proxy accepts; equal to the control plane's send limit. */
export const MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024;
/**
 * Default time a control plane gets to send the response headers of a new stream, in ms. It
 * sends them as soon as it reads the Hello.
 */
export const DEFAULT_STREAM_OPEN_TIMEOUT_MS = 10_000;

/** Number of nacked versions a proxy names in its Hello; older ones are forgotten. */
export const HELLO_NACKED_LIMIT = 16;
/** Characters of each nack's error that a Hello repeats. */
export const HELLO_NACK_ERROR_LIMIT = 1024;
/** HTTP/2 flow-control window of the snapshot stream, in bytes. */
export const SNAPSHOT_FLOW_CONTROL_WINDOW = 4 * 1024 * 1024;

const CHANNEL_OPTIONS = {
  'grpc.max_receive_message_length': MAX_SNAPSHOT_BYTES,
  'grpc.max_send_message_length': 4 * 1024 * 1024,
  // Below the 60 s idle timeout common to cloud load balancers, above the server's 10 s minimum.
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // Each stream gets its own connection, so a reset connection is never reused.
  'grpc.use_local_subchannel_pool': 1,
  // HTTP/2 window of the stream and the connection. With the default 64 KiB, a 10,000-route
  // snapshot (about 330 KB) waits for five window updates, and each is sent only after this
  // process's event loop reads the data. The window bounds what the control plane sends unread.
  'grpc-node.flow_control_window': SNAPSHOT_FLOW_CONTROL_WINDOW,
};

/** Epoch and version of the snapshot a proxy serves. */
export interface HeldVersion {
  epoch: string;
  version: number;
}

/** Settings of a snapshot client. */
export interface SnapshotClientOptions {
  /** Control-plane addresses (host:port), tried in turn. */
  addresses: string[];
  proxyId: string;
  /** Traffic address of this proxy, reported for status output. */
  proxyAddress: string;
  logger: Logger;
  /** The version served now; sent in every Hello so a reconnect resumes from it. */
  held(): HeldVersion;
  /** Builds and serves a snapshot; a rejection is sent to the control plane as a nack. */
  apply(snapshot: Snapshot): Promise<void>;
  /** TLS to the control plane; files are read again for every new connection. */
  tls?: ClientTlsFiles;
  /** Bearer token sent with every stream, for control planes that require one. */
  token?: string;
  /** Keepalive ping interval in milliseconds; default 20,000. */
  keepaliveTimeMs?: number;
  /**
   * Time a control plane gets to send the response headers of a new stream before the next
   * address is tried, in milliseconds. 0 means no limit; default {@link DEFAULT_STREAM_OPEN_TIMEOUT_MS}.
   */
  openTimeoutMs?: number;
}

export type ClientState = 'idle' | 'connecting' | 'streaming' | 'waiting' | 'stopped';

/** A client of the snapshot service whose stream delivers each response as a `T`. */
export interface SnapshotStreamClient<T> {
  stream(metadata?: Metadata): ClientDuplexStream<StreamRequest, T>;
  close(): void;
}

/** The constructor of a `SnapshotStreamClient`. */
export type SnapshotStreamClientClass<T> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: ChannelOptions,
) => SnapshotStreamClient<T>;

/**
 * Returns a client class for the snapshot service whose responses `deserialize` turns into
 * values. grpc-js calls it as each message arrives; the proxy keeps the bytes and decodes them
 * later, in slices (see `SnapshotClient`). grpc-js gives each message a buffer of its own.
 */
export function snapshotServiceClient<T>(
  deserialize: (bytes: Buffer) => T,
): SnapshotStreamClientClass<T> {
  const service = {
    stream: { ...SnapshotServiceService.stream, responseDeserialize: deserialize },
  };
  return makeGenericClientConstructor(
    service,
    'loom.v1.SnapshotService',
  ) as unknown as SnapshotStreamClientClass<T>;
}

/** A response of the snapshot stream, still encoded, and the stream it came on. */
interface ReceivedMessage {
  bytes: Buffer;
  call: ClientDuplexStream<StreamRequest, Buffer>;
  address: string;
}

/**
 * Keeps one snapshot stream open to one of the control planes. Any end or
 * error of the stream, `INTERNAL` from a reset included, leads to a new
 * stream on the next address after a backoff with jitter. Snapshots are
 * applied one at a time; while one builds, only the newest arrival waits.
 */
export class SnapshotClient {
  #state: ClientState = 'idle';
  #addressIndex = 0;
  #client: SnapshotStreamClient<Buffer> | undefined;
  #call: ClientDuplexStream<StreamRequest, Buffer> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  /** The newest message that arrived while another one was decoded or applied. */
  #pending: ReceivedMessage | undefined;
  #applying = false;
  /** The client certificate of the newest connection attempt. */
  #certificate: CertificateSummary | undefined;
  /** `address|fingerprint` pairs whose rejection was logged since the last stream. */
  readonly #reportedRejections = new Set<string>();
  /**
   * Versions this process nacked, oldest first, named in every Hello so that no control plane
   * sends one again after a reconnect or a restart of its own.
   */
  readonly #nacked: Nack[] = [];
  /**
   * Random id of this client, sent in every Hello. A control plane that still has a stream
   * with this id and proxy id replaces it, and rejects a stream of another instance.
   */
  readonly instanceId = randomUUID();
  /** True after a rejection for a duplicate proxy id was logged, until a stream opens. */
  #duplicateLogged = false;
  /** Message of the control plane's last rejection of the proxy id, until a stream opens. */
  #idRejection: string | undefined;
  /** Addresses whose reconnect log already carried a hint. */
  readonly #hintedAddresses = new Set<string>();
  readonly #backoff = new Backoff({ initialMs: 250, maxMs: 10_000 });
  #openTimer: NodeJS.Timeout | undefined;
  readonly #options: SnapshotClientOptions;
  readonly #logger: Logger;
  readonly #Client = snapshotServiceClient((bytes) => bytes);
  /** One decoder for every stream, so a reconnect still reuses the last snapshot's routes. */
  readonly #decoder = new SnapshotDecoder();

  constructor(options: SnapshotClientOptions) {
    if (options.addresses.length === 0)
      throw new TypeError('at least one control-plane address is required');
    this.#options = options;
    this.#logger = options.logger.child({ component: 'snapshot-client' });
  }

  get state(): ClientState {
    return this.#state;
  }

  /**
   * Message of the control plane that rejected the last stream because another process uses
   * the proxy id. It is undefined before any rejection and again once a stream opens.
   */
  get idRejection(): string | undefined {
    return this.#idRejection;
  }

  start(): void {
    this.#connect();
  }

  stop(): void {
    this.#transition('stopped');
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#openTimer);
    this.#call?.cancel();
    this.#client?.close();
  }

  #connect(): void {
    if (this.#state === 'stopped') return;

    const address = this.#options.addresses[this.#addressIndex % this.#options.addresses.length];
    this.#transition('connecting', { address });
    let client: SnapshotStreamClient<Buffer>;
    try {
      client = new this.#Client(address, this.#loadCredentials(), {
        ...CHANNEL_OPTIONS,
        'grpc.keepalive_time_ms':
          this.#options.keepaliveTimeMs ?? CHANNEL_OPTIONS['grpc.keepalive_time_ms'],
        ...serverNameChannelOptions(this.#options.tls),
      });
    } catch (error) {
      // An unreadable certificate may be mid-rotation; the next attempt reads it again.
      this.#scheduleReconnect(address, error instanceof Error ? error.message : String(error));
      return;
    }
    const metadata = new Metadata();
    if (this.#options.token !== undefined)
      metadata.set('authorization', `Bearer ${this.#options.token}`);
    const call = client.stream(metadata);
    this.#client = client;
    this.#call = call;

    const held = this.#options.held();
    call.write({
      kind: {
        $case: 'hello',
        hello: {
          proxyId: this.#options.proxyId,
          epoch: held.epoch,
          version: held.version,
          address: this.#options.proxyAddress,
          nacked: [...this.#nacked],
          instanceId: this.instanceId,
        },
      },
    });
    this.#limitOpenTime(call, address);
    call.on('metadata', () => {
      clearTimeout(this.#openTimer);
      this.#backoff.reset();
      this.#reportedRejections.clear();
      this.#duplicateLogged = false;
      this.#idRejection = undefined;
      this.#transition('streaming', { address });
    });
    call.on('data', (bytes: Buffer) => this.#receive({ bytes, call, address }));
    call.on('error', (error: ServiceError) => {
      if (call === this.#call) this.#reportDuplicate(address, error);
      this.#retry(call, address, tidyGrpcDetails(error.message));
    });
    call.on('end', () => this.#retry(call, address, 'stream ended by the control plane'));
  }

  /**
   * Gives up on `call` when no response headers arrive in time. grpc-js waits without limit
   * on a server that accepts the TCP connection and sends nothing, such as a stopped process.
   */
  #limitOpenTime(call: ClientDuplexStream<StreamRequest, Buffer>, address: string): void {
    clearTimeout(this.#openTimer);
    const timeoutMs = this.#options.openTimeoutMs ?? DEFAULT_STREAM_OPEN_TIMEOUT_MS;
    if (timeoutMs <= 0) return;

    this.#openTimer = setTimeout(() => {
      this.#retry(
        call,
        address,
        `no answer to the snapshot stream within ${timeoutMs} ms; check that the address is a ` +
          'running Loom control plane (its --listen port)',
      );
      call.cancel();
    }, timeoutMs);
  }

  #retry(call: ClientDuplexStream<StreamRequest, Buffer>, address: string, reason: string): void {
    if (call !== this.#call || this.#state === 'stopped') return;

    const neverStreamed = this.#state === 'connecting';
    clearTimeout(this.#openTimer);
    this.#call = undefined;
    this.#client?.close();
    this.#client = undefined;
    this.#scheduleReconnect(address, reason);
    if (neverStreamed && this.#options.tls?.cert !== undefined) void this.#diagnose(address);
  }

  /**
   * Stores a rejection for a duplicate proxy id for readiness, and logs the first one as an
   * error with the fix. The retries log only the usual reconnect line.
   */
  #reportDuplicate(address: string, error: ServiceError): void {
    const loomError = fromServiceError(error);
    if (loomError.code !== 'LOOM_ALREADY_EXISTS') return;

    this.#idRejection = loomError.message;
    if (this.#duplicateLogged) return;
    this.#duplicateLogged = true;
    this.#logger.error(
      { address, proxyId: this.#options.proxyId, reason: loomError.message },
      'control plane rejected the proxy id: another proxy uses it, retrying with backoff',
    );
  }

  /** Reads the TLS files again, and logs when the client certificate changed since the last read. */
  #loadCredentials(): ChannelCredentials {
    if (this.#options.tls === undefined) return credentials.createInsecure();

    const loaded = loadClientTls(this.#options.tls);
    const certificate = loaded.certificate;
    if (certificate !== undefined && certificate.fingerprint !== this.#certificate?.fingerprint) {
      this.#logger.info(
        { cert: this.#options.tls.cert, ...certificate },
        'tls client certificate loaded',
      );
    }
    this.#certificate = certificate;
    return loaded.credentials;
  }

  /**
   * Finds out whether the control plane rejected the client certificate, which
   * grpc-js reports only as a reset, and logs it once per address and certificate.
   */
  async #diagnose(address: string): Promise<void> {
    const certificate = this.#certificate;
    const tls = this.#options.tls;
    if (certificate === undefined || tls === undefined) return;
    const key = `${address}|${certificate.fingerprint}`;
    if (this.#reportedRejections.has(key)) return;

    const outcome = await probeClientCertificate(address, tls);
    if (outcome !== 'rejected' || this.#state === 'stopped') return;
    // Probes overlap when the backoff is shorter than a probe.
    if (this.#reportedRejections.has(key)) return;

    this.#reportedRejections.add(key);
    this.#logger.error(
      {
        address,
        cert: tls.cert,
        ...certificate,
        fix: "use a --tls-cert issued by a CA in the control plane's --tls-client-ca",
      },
      'control plane rejected the client certificate',
    );
  }

  #scheduleReconnect(address: string, reason: string): void {
    this.#addressIndex += 1;
    const delayMs = Math.round(this.#backoff.next());
    const hint = connectionHint(address, reason, this.#hintedAddresses);
    this.#logger.warn({ address, reason, delayMs, ...hint }, 'control plane lost, reconnecting');
    this.#transition('waiting');
    this.#retryTimer = setTimeout(() => this.#connect(), delayMs);
  }

  #receive(message: ReceivedMessage): void {
    this.#pending = message;
    if (!this.#applying) void this.#drain();
  }

  async #drain(): Promise<void> {
    this.#applying = true;
    while (this.#pending) {
      const message = this.#pending;
      this.#pending = undefined;
      const snapshot = await this.#decode(message);
      if (snapshot !== undefined) await this.#applyOne(snapshot);
    }
    this.#applying = false;
  }

  /**
   * Decodes a message in slices that yield to the event loop, so a large table does not stall
   * traffic while it decodes. A malformed message ends its stream, as grpc-js ends a stream whose
   * message its deserializer fails to parse, and the client reconnects.
   */
  async #decode(message: ReceivedMessage): Promise<Snapshot | undefined> {
    try {
      return (await this.#decoder.decodeSliced(message.bytes, DEFAULT_SLICE_MS)).snapshot;
    } catch (error) {
      const reason = `malformed snapshot message: ${error instanceof Error ? error.message : String(error)}`;
      this.#retry(message.call, message.address, reason);
      // A half-close still sends the acks written before; the cancel ends the stream if the
      // control plane keeps it open.
      message.call.end();
      setTimeout(() => message.call.cancel(), STREAM_CLOSE_GRACE_MS).unref();
      return undefined;
    }
  }

  async #applyOne(snapshot: Snapshot): Promise<void> {
    const held = this.#options.held();
    const { epoch, version, hash } = snapshot;
    if (epoch === held.epoch && version === held.version) {
      // The control plane missed the ack of this version: the proxy acked it to another replica,
      // or before this stream was admitted. A control plane counts only acks of versions it sent
      // to the proxy, so the ack is sent again now that this one sent the version.
      this.#call?.write({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
      return;
    }
    if (epoch === held.epoch && version < held.version) {
      // A lagging replica must never move this proxy backwards within one store history.
      this.#logger.debug({ epoch, version, held: held.version }, 'older snapshot ignored');
      return;
    }

    try {
      await this.#options.apply(snapshot);
      this.#call?.write({ kind: { $case: 'ack', ack: { epoch, version, hash } } });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.#nacked.push({ epoch, version, hash, error: message.slice(0, HELLO_NACK_ERROR_LIMIT) });
      if (this.#nacked.length > HELLO_NACKED_LIMIT) this.#nacked.shift();
      this.#call?.write({
        kind: { $case: 'nack', nack: { epoch, version, hash, error: message } },
      });
    }
  }

  #transition(next: ClientState, fields: Record<string, unknown> = {}): void {
    if (this.#state === next) return;
    const level = next === 'streaming' ? 'info' : 'debug';
    this.#logger[level](
      { from: this.#state, to: next, ...fields },
      next === 'streaming' ? 'control plane connected' : 'snapshot client state changed',
    );
    this.#state = next;
  }
}

/**
 * grpc-js reports an HTTP/1 server, such as the control plane's --admin-listen port, only in the
 * text of the error: "Protocol error" or the HTTP status it received.
 */
const HTTP1_RESPONSE = /Protocol error|Received HTTP status code|HTTP\/1/i;

/**
 * grpc-js 1.14 reads the first five bytes of an HTTP/2 response body as a gRPC message prefix
 * even when the content type is not gRPC, and reports bytes 1 to 4 as the message length.
 */
const OVERSIZED_MESSAGE = /Received message larger than max \((\d+) vs \d+\)/;

/**
 * Returns the four bytes of an oversized message length as text, such as "html" for a body that
 * starts with "<html". Returns undefined unless all four are printable ASCII.
 */
function lengthPrefixText(reason: string): string | undefined {
  const match = OVERSIZED_MESSAGE.exec(reason);
  if (match === null) return undefined;
  const length = Number(match[1]);
  if (!Number.isSafeInteger(length) || length > 0xffffffff) return undefined;

  const bytes = [length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff];
  if (!bytes.every((byte) => byte >= 0x20 && byte < 0x7f)) return undefined;
  return String.fromCharCode(...bytes);
}

/**
 * Returns a `hint` field the first time the server at an address responds as HTTP/1, or with an
 * HTTP/2 body that is not gRPC, such as an HTML page from a load balancer, or lacks the snapshot
 * service, or presents a certificate for another name. grpc-js reports the second as a message over the size limit,
 * which no snapshot caused.
 */
function connectionHint(address: string, reason: string, hinted: Set<string>): { hint?: string } {
  if (hinted.has(address)) return {};

  if (reason.includes('ERR_TLS_CERT_ALTNAME_INVALID')) {
    hinted.add(address);
    return {
      hint:
        `the control plane's certificate does not name the host of ${address}; through a ` +
        'tunnel such as kubectl port-forward, set --tls-server-name to a name it carries',
    };
  }

  // etcd replies "unknown service loom.v1.SnapshotService", and a grpc-js server "does not
  // implement the method /loom.v1.SnapshotService/Stream".
  if (reason.includes('UNIMPLEMENTED') && reason.includes('loom.v1.SnapshotService')) {
    hinted.add(address);
    return {
      hint:
        `a gRPC server other than the control plane, such as etcd, listens at ${address}; ` +
        "set --control-plane to the control plane's --listen address",
    };
  }

  if (HTTP1_RESPONSE.test(reason)) {
    hinted.add(address);
    return {
      hint: `is ${address} the control plane's gRPC port (--listen), not its --admin-listen port?`,
    };
  }
  const text = lengthPrefixText(reason);
  if (text === undefined) return {};

  hinted.add(address);
  return {
    hint: `the response from ${address} is not gRPC: the bytes read as a message length are the text ${JSON.stringify(text)}; is a server other than the control plane, such as a load balancer, answering at ${address}?`,
  };
}
