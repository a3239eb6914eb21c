import { setMaxListeners } from 'node:events';

import {
  Metadata,
  type ServerDuplexStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';

import { proxyAddressProblem } from '../../common/address.js';
import { LoomError } from '../../common/errors.js';
import { toServiceError } from '../../common/grpc-errors.js';
import { LogLimiter } from '../../common/log-limiter.js';
import type { Logger } from '../../common/logger.js';
import { proxyIdProblem } from '../../common/proxy-id.js';
import { summarizeCertificate } from '../../common/tls.js';
import {
  SnapshotServiceService,
  StreamRequest,
  type Ack,
  type Hello,
  type Nack,
} from '../../proto/gen/loom/v1/data_plane.js';
import type { ControlPlaneMetrics } from '../observability/control-plane-metrics.js';
import type { PublishedSnapshot } from '../snapshot/build-snapshot.js';
import type { SnapshotCache } from '../snapshot/snapshot-cache.js';
import { AcceptedSnapshot } from './accepted-snapshot.js';
import type { StreamAdmission } from './admission.js';
import { chooseFallback, type VersionMark } from './fallback.js';
import { clipText, type ProxyRegistry, type ProxyStream } from './proxy-registry.js';

/**
 * The generated definition with one change: responses are written as
 * pre-encoded buffers, so a snapshot is encoded once for the whole fleet.
 */
export const SNAPSHOT_SERVICE_DEFINITION: ServiceDefinition = {
  Stream: {
    ...SnapshotServiceService.stream,
    responseSerialize: (encoded: Buffer) => encoded,
  },
};

type Call = ServerDuplexStream<StreamRequest, Buffer>;

/** A connected stream of a proxy id that another control-plane replica shares. */
export interface SharedHolder {
  /** The replica's snapshot listener, as host:port. */
  controlPlane: string;
  /** Traffic address the proxy reported. */
  address: string;
  /** Rejected streams of the process asking, from 1, so that only the first is a warning. */
  attempt: number;
}

/**
 * Looks up a connected stream of proxy `id` on another replica that `stream` does not come
 * from. Returns undefined when there is none or when the shared records cannot be read.
 */
export type SharedHolderLookup = (
  id: string,
  stream: ProxyStream,
) => Promise<SharedHolder | undefined>;

/**
 * Number of nacked versions one stream remembers. Past it the oldest is forgotten, so a proxy
 * that nacked more versions in a row may get that one again as a fallback, and nack it again.
 */
const NACKED_KEY_LIMIT = 16;

/**
 * Nack lines logged per stream and window of `NACK_LOG_WINDOW_MS`; the next line logged counts
 * the ones left out. A proxy nacks each version once, so only a broken or hostile one reaches it.
 */
const NACK_LOG_LINES = 10;
const NACK_LOG_WINDOW_MS = 60_000;

/**
 * Lines about ignored acks of unsent versions logged per stream and window of
 * `UNSENT_ACK_LOG_WINDOW_MS`. The next line logged counts the ones left out.
 */
const UNSENT_ACK_LOG_LINES = 10;
const UNSENT_ACK_LOG_WINDOW_MS = 60_000;

/**
 * Default time a stream may stay open without a hello, in milliseconds. A proxy writes its hello
 * as it opens the stream, so only a client that does not speak the protocol reaches it. Until
 * then the stream takes one of the `--max-streams` slots.
 */
export const DEFAULT_HELLO_TIMEOUT_MS = 30_000;

/** Lines about streams closed for a missing hello, per window of `HELLO_LOG_WINDOW_MS`. */
const HELLO_LOG_LINES = 10;
const HELLO_LOG_WINDOW_MS = 60_000;

function versionKey(epoch: string, version: number): string {
  return `${epoch}\n${version}`;
}

/**
 * One proxy's stream. It sends the newest snapshot the proxy lacks, never one
 * older than the proxy holds in the same epoch, and never again a version the
 * proxy nacked, until a newer version exists. The proxy's hello lists the
 * versions its process nacked, so that rule also applies across reconnects and
 * restarts of the control plane. A restarted proxy lists none, and is sent that
 * version again, whether it starts empty or serves its snapshot cache, because
 * it may run a fixed build or host. Only for a proxy that sends no instance id
 * does this control plane's own record of its last nack still apply. A proxy
 * that reads slowly gets only the newest snapshot once its stream drains, not a
 * queue of old ones. A proxy that nacked a version is sent the
 * newest version some proxy acked instead, through this or another control
 * plane, unless it serves that version or a newer one (see `chooseFallback`
 * and `AcceptedSnapshot`).
 */
class ProxySession {
  #proxyId = '';
  /** This stream as the registry records it, from the hello on. */
  #stream: ProxyStream | undefined;
  /** True from a hello until it is admitted or rejected. */
  #helloSeen = false;
  #held: VersionMark = { epoch: '', version: 0 };
  #sent: VersionMark | undefined;
  #nacked: VersionMark | undefined;
  /**
   * Versions the proxy nacked, on this stream or as its hello lists, newest last, so that no
   * fallback repeats one.
   */
  readonly #nackedKeys = new Set<string>();
  /** Caps the nack lines of this stream, so that a proxy sending nacks in a loop cannot flood the log. */
  readonly #nackLog = new LogLimiter(NACK_LOG_LINES, NACK_LOG_WINDOW_MS);
  /** Caps the lines about ignored acks of this stream, for the same reason. */
  readonly #unsentAckLog = new LogLimiter(UNSENT_ACK_LOG_LINES, UNSENT_ACK_LOG_WINDOW_MS);
  /** True from a write until gRPC reports the snapshot handed to HTTP/2; one is in flight at most. */
  #writing = false;
  #closed = false;
  readonly #call: Call;
  readonly #cache: SnapshotCache;
  readonly #registry: ProxyRegistry;
  readonly #accepted: AcceptedSnapshot;
  readonly #logger: Logger;
  readonly #sharedHolder: SharedHolderLookup | undefined;
  readonly #metrics: ControlPlaneMetrics | undefined;
  readonly #unsubscribe: () => void;
  readonly #unsubscribeAccepted: () => void;
  readonly #stopping: AbortSignal | undefined;
  readonly #onStopping = () => this.#end('closed because the control plane is shutting down');
  readonly #helloTimer: NodeJS.Timeout;
  readonly #helloLog: LogLimiter;

  constructor(
    call: Call,
    cache: SnapshotCache,
    registry: ProxyRegistry,
    accepted: AcceptedSnapshot,
    logger: Logger,
    sharedHolder: SharedHolderLookup | undefined,
    metrics: ControlPlaneMetrics | undefined,
    stopping: AbortSignal | undefined,
    hello: { timeoutMs: number; log: LogLimiter },
  ) {
    this.#call = call;
    this.#cache = cache;
    this.#registry = registry;
    this.#accepted = accepted;
    this.#logger = logger;
    this.#sharedHolder = sharedHolder;
    this.#metrics = metrics;
    this.#unsubscribe = cache.subscribe(() => this.#offer());
    this.#unsubscribeAccepted = accepted.subscribe(() => this.#offer());
    call.on('data', (request: StreamRequest) => this.#onRequest(request));
    // A proxy that half-closes its side sends nothing more, so the stream ends with OK instead of
    // holding a stream slot with no proxy behind it.
    call.on('end', () => this.#finish());
    call.on('error', (error: Error) => this.#close(error.message));
    call.on('cancelled', () => this.#close('stream cancelled'));
    this.#stopping = stopping;
    stopping?.addEventListener('abort', this.#onStopping, { once: true });
    this.#helloLog = hello.log;
    this.#helloTimer = setTimeout(() => this.#onHelloTimeout(hello.timeoutMs), hello.timeoutMs);
    this.#helloTimer.unref();
  }

  /** Ends a stream that sent no hello, so that it does not keep its stream slot. */
  #onHelloTimeout(timeoutMs: number): void {
    if (this.#closed || this.#helloSeen) return;

    const suppressed = this.#helloLog.take();
    if (suppressed !== undefined) {
      this.#logger.warn(
        { peer: this.#call.getPeer(), timeoutMs, suppressed },
        'stream closed: no hello received',
      );
    }
    this.#close('no hello received');
    const error = new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `the snapshot stream sent no hello within ${timeoutMs} ms; a client must send ` +
        'StreamRequest.hello as its first message (see proto/loom/v1/data_plane.proto)',
    );
    this.#call.emit('error', toServiceError(error));
  }

  #onRequest(request: StreamRequest): void {
    if (this.#closed) return;
    const kind = request.kind;
    if (kind?.$case === 'hello') this.#onHello(kind.hello);
    else if (kind?.$case === 'ack') this.#onAck(kind.ack);
    else if (kind?.$case === 'nack') this.#onNack(kind.nack);
  }

  #onHello(hello: Hello): void {
    if (this.#helloSeen) return;
    this.#helloSeen = true;
    clearTimeout(this.#helloTimer);
    const invalid = checkHello(hello);
    if (invalid !== undefined) {
      this.#logger.warn(
        {
          proxyId: hello.proxyId.slice(0, 80),
          address: hello.address.slice(0, 80),
          problem: invalid.problem,
        },
        invalid.logMessage,
      );
      const error = new LoomError('LOOM_INVALID_ARGUMENT', invalid.errorMessage);
      this.#call.emit('error', toServiceError(error));
      return;
    }

    const stream: ProxyStream = {
      instanceId: hello.instanceId,
      address: hello.address,
      peerHost: peerHost(this.#call.getPeer()),
      end: (reason) => this.#end(reason),
    };
    if (this.#sharedHolder === undefined) {
      this.#admit(hello, stream);
      return;
    }
    // Messages that arrive meanwhile are dropped, but a proxy sends none before its first snapshot.
    void this.#sharedHolder(hello.proxyId, stream).then((holder) => {
      if (this.#closed) return;
      if (holder === undefined) this.#admit(hello, stream);
      else this.#reject(hello, stream, holder);
    });
  }

  /** Records the stream as the proxy's, unless another process owns the id, and starts sending. */
  #admit(hello: Hello, stream: ProxyStream): void {
    const connected = this.#registry.connect(hello.proxyId, stream, hello.epoch, hello.version);
    if (connected.outcome === 'rejected') {
      const { holder, attempt } = connected;
      this.#reject(hello, stream, { controlPlane: '', address: holder.address, attempt });
      return;
    }
    if (connected.outcome === 'replaced') {
      this.#logger.info(
        { proxyId: hello.proxyId, address: hello.address, instanceId: hello.instanceId },
        'proxy stream replaced by a new stream of the same process',
      );
      connected.previous.end('replaced by a new stream of the same proxy process');
    }

    this.#proxyId = hello.proxyId;
    this.#stream = stream;
    this.#held = { epoch: hello.epoch, version: hello.version };
    if (hello.version > 0) this.#nacked = this.#registry.lastNack(hello.proxyId, hello.instanceId);
    // The proxy's own list outlives this control plane's memory: a restart or another replica
    // would otherwise send a version again that this proxy process already nacked.
    for (const nack of hello.nacked) this.#rememberNack(nack.epoch, nack.version);
    const newest = hello.nacked.at(-1);
    if (newest !== undefined && this.#registry.lastNack(hello.proxyId) === undefined) {
      this.#registry.nack(hello.proxyId, newest.epoch, newest.version, newest.error);
    }
    // A proxy builds a version before it serves it, so the hello counts as its ack. Otherwise
    // an ack lost with the previous stream would leave the accepted version behind.
    if (hello.version > 0) this.#accepted.noteAck(hello.epoch, hello.version);
    // Headers go out now, so the proxy sees the stream is up even when it needs no snapshot.
    this.#call.sendMetadata(new Metadata());
    this.#logger.info(
      {
        proxyId: hello.proxyId,
        address: hello.address,
        instanceId: hello.instanceId,
        peer: this.#call.getPeer(),
        epoch: hello.epoch,
        version: hello.version,
        certificate: summarizeCertificate(this.#call.getAuthContext().sslPeerCertificate),
      },
      'proxy connected',
    );
    this.#cache.noteHeldVersion(hello.epoch, hello.version);
    this.#offer();
  }

  /**
   * Ends the stream with ALREADY_EXISTS because another process owns the proxy id. The first
   * rejection of each process is a warning and its retries are debug lines, because a rejected
   * proxy retries every few seconds until one of the two stops.
   */
  #reject(hello: Hello, stream: ProxyStream, holder: SharedHolder): void {
    const where = holder.controlPlane === '' ? '' : ` through control plane ${holder.controlPlane}`;
    const message =
      `proxy id ${JSON.stringify(hello.proxyId)} is already connected from ${holder.address}` +
      `${where}, so this stream from ${stream.address} was rejected: two proxy processes use ` +
      'the same --id; give each proxy a unique --id, or omit --id to use the default ' +
      '(host name and process id)';
    const fields = {
      proxyId: hello.proxyId,
      address: stream.address,
      instanceId: stream.instanceId,
      peer: this.#call.getPeer(),
      heldBy: holder.address,
      heldThrough: holder.controlPlane || undefined,
      attempt: holder.attempt,
    };
    this.#metrics?.duplicateProxyIdRejected(
      holder.controlPlane === '' ? 'this_replica' : 'other_replica',
    );
    if (holder.attempt === 1) this.#logger.warn(fields, 'stream rejected: duplicate proxy id');
    else this.#logger.debug(fields, 'stream rejected: duplicate proxy id');
    this.#close('duplicate proxy id');
    this.#call.emit('error', toServiceError(new LoomError('LOOM_ALREADY_EXISTS', message)));
  }

  #onAck(ack: Ack): void {
    if (!this.#proxyId) return;
    // A proxy may ack on its new stream a snapshot that reached it on the previous one, so the
    // registry checks the versions sent on every stream of the id, and those its hellos reported.
    if (!this.#registry.wasSent(this.#proxyId, ack.epoch, ack.version)) {
      this.#ignoreUnsentAck(ack);
      return;
    }

    this.#metrics?.acked(ack.version);
    this.#held = { epoch: ack.epoch, version: ack.version };
    this.#registry.ack(this.#proxyId, ack.epoch, ack.version);
    this.#accepted.noteAck(ack.epoch, ack.version);
    // Per proxy and version, so debug: a fleet of 1,000 proxies would log 1,000 lines per apply.
    this.#logger.debug(
      { proxyId: this.#proxyId, epoch: ack.epoch, version: ack.version },
      'version acked',
    );
  }

  /**
   * Drops an ack of a version never sent to this proxy id, so that `status` and `apply --wait`
   * do not show a version the proxy cannot serve, and the proxy is still sent what it lacks.
   */
  #ignoreUnsentAck(ack: Ack): void {
    this.#metrics?.unsentAcked();
    const suppressed = this.#unsentAckLog.take();
    if (suppressed === undefined) return;

    this.#logger.warn(
      {
        proxyId: this.#proxyId,
        epoch: clipText(ack.epoch),
        version: ack.version,
        heldEpoch: this.#held.epoch,
        heldVersion: this.#held.version,
        suppressed,
      },
      'ack ignored: version never sent to this proxy',
    );
  }

  #onNack(nack: Nack): void {
    if (!this.#proxyId) return;
    // A repeat of a nack this stream remembers changes no state, so a proxy that sends one in a
    // loop costs no log line, store read or status change.
    if (this.#nackedKeys.has(versionKey(nack.epoch, nack.version))) return;

    this.#rememberNack(nack.epoch, nack.version);
    this.#registry.nack(this.#proxyId, nack.epoch, nack.version, nack.error);
    const suppressed = this.#nackLog.take();
    if (suppressed !== undefined) {
      this.#logger.warn(
        {
          proxyId: this.#proxyId,
          epoch: nack.epoch,
          version: nack.version,
          error: clipText(nack.error),
          errorLength: nack.error.length,
          suppressed,
        },
        'version nacked',
      );
    }
    // Another replica, or this one before a restart, may have recorded a newer accepted
    // version. When the refresh finds one, its listener offers again.
    void this.#accepted.refresh();
    this.#offer();
  }

  #rememberNack(epoch: string, version: number): void {
    // A nack of an older version (a fallback) keeps the newer nacked one, which must not be resent.
    const newer = this.#nacked?.epoch === epoch && this.#nacked.version > version;
    if (!newer) this.#nacked = { epoch, version };
    this.#nackedKeys.add(versionKey(epoch, version));
    if (this.#nackedKeys.size > NACKED_KEY_LIMIT) {
      this.#nackedKeys.delete(this.#nackedKeys.values().next().value!);
    }
  }

  #offer(): void {
    if (this.#closed || !this.#proxyId || this.#writing) return;

    const current = this.#cache.current;
    const published = current && this.#needs(current) ? current : this.#fallback();
    if (!published) return;

    const { epoch, version } = published.snapshot;
    this.#sent = { epoch, version };
    this.#registry.sent(this.#proxyId, epoch, version);
    this.#logger.debug({ proxyId: this.#proxyId, epoch, version }, 'snapshot sent');
    // The stream's own buffer takes 16 messages before write() returns false, so it
    // cannot keep a slow proxy to one snapshot; the write callback can.
    this.#writing = true;
    this.#call.write(published.encoded, () => this.#onWritten());
  }

  #needs(published: PublishedSnapshot): boolean {
    const { epoch, version } = published.snapshot;
    const covers = (mark: VersionMark | undefined) =>
      mark !== undefined && mark.epoch === epoch && mark.version >= version;
    return !covers(this.#held) && !covers(this.#sent) && !covers(this.#nacked);
  }

  /** Returns the accepted snapshot when this proxy should get it after a nack, and records it. */
  #fallback(): PublishedSnapshot | undefined {
    const marks = { serving: this.#held, sent: this.#sent, nacked: this.#nacked };
    const fallback = chooseFallback(marks, this.#accepted.current);
    if (!fallback || !this.#nacked) return undefined;

    const { epoch, version } = fallback.snapshot;
    if (this.#nackedKeys.has(versionKey(epoch, version))) return undefined;
    this.#registry.fallback(this.#proxyId, epoch, version);
    this.#logger.warn(
      {
        proxyId: this.#proxyId,
        epoch,
        version,
        nackedEpoch: this.#nacked.epoch,
        nackedVersion: this.#nacked.version,
      },
      'sending last accepted version',
    );
    return fallback;
  }

  #onWritten(): void {
    this.#writing = false;
    this.#offer();
  }

  #close(reason: string): void {
    if (this.#closed) return;

    this.#closed = true;
    clearTimeout(this.#helloTimer);
    this.#unsubscribe();
    this.#unsubscribeAccepted();
    this.#stopping?.removeEventListener('abort', this.#onStopping);
    if (!this.#proxyId || !this.#stream) return;
    this.#registry.disconnect(this.#proxyId, this.#stream);
    this.#logger.info({ proxyId: this.#proxyId, reason }, 'proxy disconnected');
  }

  /** Ends the stream with OK after the proxy half-closed it. */
  #finish(): void {
    if (this.#closed) return;

    this.#close('stream ended by the proxy');
    this.#call.end();
  }

  /** Ends the stream with UNAVAILABLE, so that the proxy connects again, here or elsewhere. */
  #end(reason: string): void {
    this.#close(reason);
    const error = new LoomError('LOOM_UNAVAILABLE', `snapshot stream ${reason}`);
    this.#call.emit('error', toServiceError(error));
  }
}

/** Creates the SnapshotService implementation for a gRPC server. */
export function createSnapshotService(options: {
  cache: SnapshotCache;
  registry: ProxyRegistry;
  logger: Logger;
  /** Checks credentials and paces new streams; a refused stream ends at once. */
  admission?: StreamAdmission;
  /** Finds the streams of other replicas on a shared store, so that a duplicate id is rejected. */
  sharedHolder?: SharedHolderLookup;
  /** Counts the streams rejected for a duplicate proxy id. */
  metrics?: ControlPlaneMetrics;
  /**
   * Aborted when the control plane stops. Every open stream then ends with UNAVAILABLE,
   * because a snapshot stream never ends by itself and would delay the gRPC server's shutdown.
   */
  stopping?: AbortSignal;
  /** Time a stream may stay open without a hello, in milliseconds; default `DEFAULT_HELLO_TIMEOUT_MS`. */
  helloTimeoutMs?: number;
}): UntypedServiceImplementation {
  const logger = options.logger.child({ component: 'stream' });
  // Every open stream listens for the abort. Without this, Node.js warns of a possible leak
  // once an 11th proxy connects.
  if (options.stopping) setMaxListeners(0, options.stopping);
  const accepted = new AcceptedSnapshot(options.cache, {
    store: options.cache.store,
    prefix: options.cache.prefix,
    logger,
  });
  const hello = {
    timeoutMs: options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS,
    log: new LogLimiter(HELLO_LOG_LINES, HELLO_LOG_WINDOW_MS),
  };
  return {
    Stream(call: Call) {
      if (options.stopping?.aborted) {
        const error = new LoomError(
          'LOOM_UNAVAILABLE',
          'this control plane is shutting down; the proxy tries its next control-plane address',
        );
        call.emit('error', toServiceError(error));
        return;
      }
      if (options.admission && !options.admission.admit(call)) return;
      if (options.cache.current === undefined) {
        rejectWithoutSnapshot(call, logger);
        return;
      }
      new ProxySession(
        call,
        options.cache,
        options.registry,
        accepted,
        logger,
        options.sharedHolder,
        options.metrics,
        options.stopping,
        hello,
      );
    },
  };
}

/**
 * Ends a stream with UNAVAILABLE while this control plane has published no snapshot, as when
 * its first read of the store keeps failing. An accepted stream would send response headers
 * and then nothing, and the proxy would wait on it instead of trying its next address.
 */
function rejectWithoutSnapshot(call: Call, logger: Logger): void {
  logger.debug({ peer: call.getPeer() }, 'stream rejected: no snapshot published yet');
  const error = new LoomError(
    'LOOM_UNAVAILABLE',
    'this control plane has no snapshot to send yet, because its first read of the store has ' +
      'not succeeded; the proxy tries its next control-plane address. See the control ' +
      'plane\'s log for "store sync failed, retrying"',
  );
  call.emit('error', toServiceError(error));
}

/** Returns the host of a gRPC peer string such as `127.0.0.1:5000` or `::1:5000`. */
export function peerHost(peer: string): string {
  const colon = peer.lastIndexOf(':');
  if (colon <= 0 || !/^\d+$/.test(peer.slice(colon + 1))) return peer;
  return peer.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
}

/** Why the control plane rejects a hello: the problem, its log message and the client's error. */
interface HelloProblem {
  problem: string;
  logMessage: string;
  errorMessage: string;
}

/** Returns the first problem of a hello: its proxy id, then its traffic address. */
function checkHello(hello: Hello): HelloProblem | undefined {
  const idProblem = proxyIdProblem(hello.proxyId);
  if (idProblem !== undefined) {
    return {
      problem: idProblem,
      logMessage: 'stream rejected: invalid proxy id',
      errorMessage:
        `invalid proxy id ${JSON.stringify(hello.proxyId.slice(0, 80))}: it ${idProblem}; ` +
        'start the proxy with a shorter --id',
    };
  }
  const addressProblem = proxyAddressProblem(hello.address);
  if (addressProblem !== undefined) {
    return {
      problem: addressProblem,
      logMessage: 'stream rejected: invalid proxy address',
      errorMessage:
        `invalid proxy address ${JSON.stringify(hello.address.slice(0, 80))}: it ` +
        `${addressProblem}; start the proxy with --listen HOST:PORT such as 0.0.0.0:8080`,
    };
  }
  return undefined;
}
