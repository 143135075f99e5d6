import NIOCore
import NIOHTTP1
import PorticoBalancing
import PorticoRouting

/// One request/response exchange between a downstream and a backend, including its retries.
///
/// Lives on the downstream's event loop, owned by its ``DownstreamHandler``.
final class Exchange {
    let head: HTTPRequestHead
    let framing: RequestFraming
    let route: Route
    let pool: BackendPool
    let requestID: String
    let hashKey: UInt64?
    let started: NIODeadline
    let keepAlive: Bool

    /// The backend currently tried, counted in its pool's load while set.
    var backend: Backend? {
        didSet { if let backend { self.lastBackendID = backend.id } }
    }
    /// The last backend tried, for the access log (``backend`` is cleared when its load is released).
    var lastBackendID: String?
    var upstreamHead: HTTPRequestHead?
    /// Backends already tried, by index, so that a retry goes elsewhere.
    var tried: [Int] = []
    var attempts = 0

    /// The request's end arrived from downstream.
    var requestEnded = false
    /// Body bytes sent upstream in the current attempt.
    var bodyBytesSent = 0
    /// Body parts kept for a retry, while they stay under ``replayLimit``.
    var replay: [ByteBuffer] = []
    var replayBytes = 0
    var replayOverflowed = false
    /// Parts that arrived while no upstream connection was ready yet.
    var pending: [HTTPServerRequestPart] = []

    var responseStatus: HTTPResponseStatus?
    var responseBytes = 0
    var closeAfterResponse = false
    /// The sticky cookie the request carried, if any; a response from another backend sets a new one.
    var stickyToken: Substring?
    /// The request is a WebSocket handshake.
    var isWebSocket = false
    /// The backend answered the handshake with 101: once its end arrives the connection becomes a tunnel.
    var upgraded = false
    /// What the backend's 101 negotiated for the frames' RSV bits.
    var reservedBits = WebSocketFrameTracker.ReservedBits.none
    /// The backend's response allows another request on the same connection.
    var upstreamReusable = false
    /// The upstream connection came from the idle pool (it may have been closed by the backend meanwhile).
    var upstreamWasReused = false

    static let replayLimit = 64 * 1024

    init(
        head: HTTPRequestHead,
        framing: RequestFraming,
        route: Route,
        pool: BackendPool,
        requestID: String,
        hashKey: UInt64?
    ) {
        self.head = head
        self.framing = framing
        self.route = route
        self.pool = pool
        self.requestID = requestID
        self.hashKey = hashKey
        self.started = .now()
        self.keepAlive = head.isKeepAlive
    }

    var responseStarted: Bool { self.responseStatus != nil }

    /// Keeps a body part for a possible retry.
    func remember(_ body: ByteBuffer) {
        guard !self.replayOverflowed else { return }
        self.replayBytes += body.readableBytes
        if self.replayBytes > Self.replayLimit {
            self.replayOverflowed = true
            self.replay = []
        } else {
            self.replay.append(body)
        }
    }

    /// Whether a failure before any response byte may be retried on another backend: no body byte was
    /// sent yet, or the method is idempotent and the whole body sent so far can be replayed.
    var isRetryable: Bool {
        guard !self.responseStarted else { return false }
        if self.bodyBytesSent == 0 { return true }
        return self.head.isIdempotent && !self.replayOverflowed
    }
}
