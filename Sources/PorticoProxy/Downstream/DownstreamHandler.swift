import Logging
import NIOCore
import NIOHTTP1
import PorticoBalancing
import PorticoConfig
import PorticoRouting

/// The last handler of a downstream (client → proxy) pipeline: routes each request, picks a backend, and
/// streams the request up and the response down with backpressure in both directions.
///
/// Runs entirely on the downstream's event loop; its upstream connection is opened on the same loop, so the
/// two halves call each other directly, with no locks and no hops.
final class DownstreamHandler: ChannelDuplexHandler, RemovableChannelHandler, UpstreamDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let store: ConfigStore
    /// The snapshot of the last request head; refreshed when a reload has installed a newer one.
    private var snapshot: ProxySnapshot
    private let upstreams: UpstreamConnectionPool
    private let timeouts: DownstreamTimeoutHandler?
    private let accessLog: AccessLog
    private let metrics: LoopMetrics
    private let scheme: String
    /// On a plain listener with `redirect_https`: the https port to send every request to.
    private let redirectHTTPSPort: Int?
    private var context: ChannelHandlerContext?
    private var downstreamIP: String?

    /// The exchange in progress, if any.
    private var exchange: Exchange?
    /// The response timeout of the current exchange (`pools.*.response_timeout`).
    private var responseTimer: LazyTimer?
    /// `limits.body_timeout`: set while a request body is being read and reads are not held back by the proxy.
    private var bodyTimer: LazyTimer?
    /// A request body is still arriving (forwarded, held for an upstream, or read to be dropped).
    private var isReadingBody = false
    /// `limits.send_timeout`: set while the downstream does not take what is written to it.
    private var sendTimer: LazyTimer?
    /// Its upstream connection, once one is ready.
    private var upstream: UpstreamHandler?
    /// A locally answered request whose remaining body parts are read and dropped.
    private var discardingBody = false
    /// A response head went downstream and its end has not.
    private var responseInProgress = false
    /// The connection will close once the current response is written; nothing more is read as a request.
    private var isClosing = false
    /// `read` was held back for backpressure.
    private var pendingRead = false
    /// Parts of pipelined requests that arrived while an earlier one was in progress, served in order after it.
    /// Reading pauses while any wait, so a client that pipelines cannot make this grow without bound.
    private var pipelined = CircularBuffer<HTTPServerRequestPart>()
    /// The exchange waiting in its pool's hold queue, if any.
    private var held: (exchange: Exchange, ticket: Int, id: UInt64, timer: Scheduled<Void>)?
    private var holdSequence = 0
    private var requestIDs = RequestIDGenerator()

    init(
        store: ConfigStore,
        upstreams: UpstreamConnectionPool,
        timeouts: DownstreamTimeoutHandler?,
        accessLog: AccessLog,
        metrics: LoopMetrics = LoopMetrics(),
        scheme: String = "http",
        redirectHTTPSPort: Int? = nil
    ) {
        self.redirectHTTPSPort = redirectHTTPSPort
        self.metrics = metrics
        self.store = store
        self.snapshot = store.snapshot
        self.upstreams = upstreams
        self.timeouts = timeouts
        self.accessLog = accessLog
        self.scheme = scheme
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.downstreamIP = context.channel.remoteAddress?.ipAddress
        // One lazily re-armed timer per connection: exchanges on a keep-alive connection schedule nothing.
        // Captured strongly: a weak reference would give this handler a side table, which makes every retain and
        // release of it slower, on every request. handlerRemoved breaks the cycle.
        // Before the response head it is `response_timeout` from the request's end; after it, the longest gap
        // between two reads of the response body (nginx's proxy_read_timeout): a backend that stalls mid-body
        // does not hold the client for ever.
        self.responseTimer = LazyTimer(eventLoop: context.eventLoop, period: .seconds(1)) {
            guard let exchange = self.exchange else { return }
            self.upstreamFailed(exchange, error: ProxyError.responseTimeout, timedOut: true)
        }
        self.bodyTimer = LazyTimer(eventLoop: context.eventLoop, period: .seconds(1)) { self.bodyTimedOut() }
        self.sendTimer = LazyTimer(eventLoop: context.eventLoop, period: .seconds(1)) { self.sendTimedOut() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.responseTimer?.cancel()
        self.responseTimer = nil
        self.bodyTimer?.cancel()
        self.bodyTimer = nil
        self.sendTimer?.cancel()
        self.sendTimer = nil
        self.context = nil
    }

    // MARK: Downstream events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if !self.pipelined.isEmpty || (part.isHead && self.isBusy) {
            self.pipelined.append(part)
            return
        }
        self.handle(part, context: context)
    }

    /// An exchange is in progress (or held, or its response is being written): a new request head waits.
    private var isBusy: Bool { self.exchange != nil || self.responseInProgress || self.held != nil }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.timeouts?.headReceived()
            guard !self.isClosing else { return }
            self.begin(head, context: context)
        case .body(let buffer):
            if self.isReadingBody { self.armBodyTimer() }
            guard !self.discardingBody, let exchange = self.exchange, !exchange.requestEnded else { return }
            if let upstream = self.upstream {
                self.sendBody(buffer, on: upstream, exchange: exchange)
            } else {
                exchange.pending.append(part)
            }
        case .end:
            self.bodyEnded()
            if self.discardingBody {
                self.discardingBody = false
                if !self.isClosing && !self.responseInProgress { self.timeouts?.exchangeFinished() }
                return
            }
            guard let exchange = self.exchange, !exchange.requestEnded else { return }
            exchange.requestEnded = true
            if let upstream = self.upstream {
                upstream.write(.end(nil))
                upstream.flush()
                self.armResponseTimer(exchange)
            } else {
                exchange.pending.append(part)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.upstream?.flush()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if self.shouldHoldReads {
            self.pendingRead = true
            self.bodyTimer?.clear()  // the proxy holds the body back: the client is not the slow one
            if let exchange = self.exchange, !exchange.requestEnded, !exchange.responseStarted,
                let upstream = self.upstream, !upstream.isWritable
            {
                // The backend does not read the body: it has response_timeout to start again (or to answer).
                self.responseTimer?.set(in: .milliseconds(exchange.pool.configuration.responseTimeout.milliseconds))
            }
        } else {
            context.read()
        }
    }

    /// Reads wait while pipelined requests are queued, or while a request body has nowhere to go: no upstream
    /// yet, or the upstream is full.
    private var shouldHoldReads: Bool {
        if !self.pipelined.isEmpty { return true }
        guard let exchange = self.exchange, !exchange.requestEnded else { return false }
        guard let upstream = self.upstream else { return true }
        return !upstream.isWritable
    }

    private func resumeReadsIfPossible() {
        guard self.pendingRead, !self.shouldHoldReads, let context = self.context else { return }
        self.pendingRead = false
        if self.isReadingBody { self.armBodyTimer() }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // While the client does not take the response, the backend is not read either: then send_timeout is
        // the clock that runs, not the backend's read timeout.
        let responding = self.exchange.map { $0.responseStarted } ?? false
        if context.channel.isWritable {
            self.sendTimer?.clear()
            if responding, let exchange = self.exchange { self.armResponseReadTimer(exchange) }
            self.upstream?.resumeReading()
        } else {
            self.sendTimer?.set(in: .milliseconds(self.snapshot.configuration.limits.sendTimeout.milliseconds))
            if responding { self.responseTimer?.clear() }
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Body and send timeouts

    private func bodyStarted() {
        self.isReadingBody = true
        self.armBodyTimer()
    }

    private func bodyEnded() {
        self.isReadingBody = false
        self.bodyTimer?.clear()
    }

    private func armBodyTimer() {
        self.bodyTimer?.set(in: .milliseconds(self.snapshot.configuration.limits.bodyTimeout.milliseconds))
    }

    /// No body bytes for `body_timeout`: 408 when nothing was answered yet, and the connection closes either
    /// way. The upstream connection, which got part of a request, is closed, never pooled.
    private func bodyTimedOut() {
        guard self.isReadingBody, let context = self.context else { return }
        self.isReadingBody = false
        self.isClosing = true
        self.pipelined.removeAll()
        guard let exchange = self.exchange, !exchange.requestEnded else {
            context.close(promise: nil)  // a local answer is out; its body was being read to be dropped
            return
        }
        self.exchange = nil
        if let held = self.held {
            self.held = nil
            held.timer.cancel()
            exchange.pool.state.cancel(held.id)
        }
        self.responseTimer?.clear()
        self.releaseBackend(exchange)
        if let upstream = self.upstream {
            upstream.delegate = nil
            upstream.close()
            self.upstream = nil
        }
        let answered = exchange.responseStarted || self.responseInProgress
        self.record(exchange, status: exchange.responseStatus?.code ?? 408, downstreamIP: self.downstreamIP)
        if answered {
            context.close(promise: nil)
        } else {
            self.writeLocalResponse(.requestTimeout, version: exchange.head.version, closing: true, context: context)
        }
    }

    /// The downstream took nothing for `send_timeout`: cut it (channelInactive releases the upstream).
    private func sendTimedOut() {
        guard let context = self.context, !context.channel.isWritable else { return }
        self.accessLog.logger.info(
            "send timeout: closing a downstream that does not read",
            metadata: ["portico.downstream": "\(self.downstreamIP ?? "?")"]
        )
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.pipelined.removeAll()
        if let held = self.held {
            self.held = nil
            held.timer.cancel()
            held.exchange.pool.state.cancel(held.id)
        }
        if let exchange = self.exchange {
            // The client went away mid-exchange: the upstream connection is in an unknown state; never reuse it.
            self.exchange = nil
            self.responseTimer?.clear()
            self.releaseBackend(exchange)
            self.upstream?.delegate = nil
            self.upstream?.close()
            self.upstream = nil
            self.record(
                exchange,
                status: exchange.responseStatus?.code ?? 499,
                downstreamIP: self.downstreamIP
            )
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ProxyShutdownEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.isClosing = true
        if let exchange = self.exchange {
            exchange.closeAfterResponse = true  // finish this one, then close
        } else if !self.responseInProgress {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            // A malformed request never reaches a backend: answer it if no response is under way, then close.
            if !self.responseInProgress && self.exchange == nil {
                let status: HTTPResponseStatus =
                    parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
                self.isClosing = true
                self.writeLocalResponse(status, version: .http1_1, closing: true, context: context)
                self.accessLog.rejected(status: status.code, reason: "\(parserError)", downstreamIP: self.downstreamIP)
            } else {
                context.close(promise: nil)
            }
            return
        }
        context.close(promise: nil)
    }

    // MARK: Routing and dispatch

    private func begin(_ decodedHead: HTTPRequestHead, context: ChannelHandlerContext) {
        if self.store.generation != self.snapshot.generation { self.snapshot = self.store.snapshot }
        let limits = self.snapshot.configuration.limits
        var head = decodedHead
        let framing: RequestFraming
        switch RequestInspection.inspect(head, limits: limits) {
        case .failure(let rejection):
            self.refuse(head, rejection, context: context)
            return
        case .success(let value):
            framing = value
        }
        if let rejection = RequestTarget.normalize(&head) {
            self.refuse(head, rejection, context: context)
            return
        }
        if framing != .none { self.bodyStarted() }
        if let port = self.redirectHTTPSPort {
            self.redirectToHTTPS(head, framing: framing, port: port, context: context)
            return
        }

        guard let route = self.snapshot.routes.match(head), let pool = self.snapshot.pools[route.pool] else {
            self.answerLocally(.notFound, head: head, framing: framing, reason: "no route", context: context)
            return
        }
        let isWebSocket = head.isWebSocketUpgrade
        if isWebSocket, let origins = route.websocket?.origins, !origins.isEmpty {
            // Cross-site WebSocket hijacking: a browser always sends Origin; only listed sites may open sockets.
            let origin = head.headers.first(name: "origin") ?? ""
            guard origins.contains(origin) else {
                ProxyMetrics.handshakeFailure(pool: pool.name, reason: "origin")
                self.answerLocally(
                    .forbidden,
                    head: head,
                    framing: framing,
                    reason: "origin \(origin)",
                    context: context
                )
                return
            }
        }
        if let expect = head.headers.first(name: "expect") {
            guard expect.lowercased() == "100-continue" else {
                self.answerLocally(.expectationFailed, head: head, framing: framing, reason: "expect", context: context)
                return
            }
            // Like nginx: the proxy reads the body itself, so it invites it at once.
            if head.version == .http1_1 {
                context.writeAndFlush(
                    Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))),
                    promise: nil
                )
            }
        }

        let hashKey = PoolConfiguration.HashKeySource.key(
            pool.configuration.hashKey,
            head: head,
            downstreamIP: self.downstreamIP
        )
        let exchange = Exchange(
            head: head,
            framing: framing,
            route: route,
            pool: pool,
            requestID: head.requestID(generator: &self.requestIDs),
            hashKey: hashKey
        )
        exchange.isWebSocket = isWebSocket
        if head.stopsTheParser && !isWebSocket { exchange.closeAfterResponse = true }
        self.exchange = exchange
        self.dispatch(exchange)
    }

    /// Ambiguous framing, an oversize head, a bad target: answer, never forward, and close (the rest of the byte
    /// stream cannot be trusted to be parsed the way the client meant it).
    private func refuse(_ head: HTTPRequestHead, _ rejection: RequestRejection, context: ChannelHandlerContext) {
        self.isClosing = true
        self.writeLocalResponse(rejection.status, version: head.version, closing: true, context: context)
        self.accessLog.rejected(
            head,
            status: rejection.status.code,
            reason: rejection.reason,
            downstreamIP: self.downstreamIP
        )
    }

    /// Picks the next backend for `exchange` and gets a connection to it.
    private func dispatch(_ exchange: Exchange) {
        let pool = exchange.pool
        func isUsable(_ backend: Backend) -> Bool {
            !exchange.tried.contains(backend.index) && pool.isUsable(backend)
        }
        if exchange.attempts == 0 && pool.state.isPaused {
            self.hold(exchange)
            return
        }
        var selected: Backend?
        if let cookie = pool.stickyCookie, exchange.attempts == 0 {
            exchange.stickyToken = cookieValue(cookie, in: exchange.head.headers)
            if let token = exchange.stickyToken, let pinned = pool.backend(forStickyToken: token), isUsable(pinned) {
                selected = pinned  // the client's sticky backend, while it can take the request
            }
        }
        if selected == nil {
            selected = pool.selector.select(key: exchange.hashKey, where: isUsable)
        }
        guard let backend = selected else {
            if exchange.attempts == 0 {
                self.hold(exchange)
            } else {
                self.fail(exchange, status: .badGateway, reason: "no other usable backend")
            }
            return
        }
        exchange.tried.append(backend.index)
        exchange.attempts += 1
        exchange.backend = backend
        exchange.pool.load.begin(backend)
        exchange.pool.states[backend.index].countRequest()

        // A WebSocket handshake gets a connection of its own: the connection becomes the tunnel, and some
        // servers only upgrade the first request of a connection.
        if !exchange.isWebSocket, let handler = self.upstreams.lease(backend, tls: pool.tls != nil) {
            self.attach(handler, to: exchange, reused: true)
            return
        }
        let timeout = TimeAmount.milliseconds(exchange.pool.configuration.connectTimeout.milliseconds)
        self.upstreams.connect(backend, timeout: timeout, tls: pool.tls, forUpgrade: exchange.isWebSocket)
            .hop(to: self.upstreams.eventLoop)
            .assumeIsolated().whenComplete { result in
                guard self.exchange === exchange, exchange.backend == backend else {
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let channel):
                    guard let handler = self.upstreams.handler(of: channel), channel.isActive else {
                        channel.close(promise: nil)
                        self.upstreamFailed(exchange, error: ProxyError.upstreamClosed, timedOut: false)
                        return
                    }
                    self.attach(handler, to: exchange, reused: false)
                case .failure(let error):
                    self.upstreamFailed(exchange, error: error, timedOut: false)
                }
            }
    }

    /// No backend can take `exchange` now (or its pool is paused): wait for one, in arrival order, for up to
    /// `hold.timeout`; without a `hold` section (and not paused) answer 503 at once.
    private func hold(_ exchange: Exchange) {
        let pool = exchange.pool
        guard let context = self.context,
            let config = pool.configuration.hold ?? (pool.state.isPaused ? HoldConfiguration() : nil)
        else {
            self.fail(exchange, status: .serviceUnavailable, reason: "no usable backend")
            return
        }
        self.holdSequence += 1
        let ticket = self.holdSequence
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        guard
            let id = pool.state.hold(
                limit: config.maxQueued,
                release: { loop.execute { handler.value.releaseHeld(ticket) } }
            )
        else {
            ProxyMetrics.held(pool: pool.name, outcome: "queue_full")
            self.fail(exchange, status: .serviceUnavailable, reason: "hold queue full")
            return
        }
        ProxyMetrics.held(pool: pool.name, outcome: "held")
        let timer = loop.assumeIsolated().scheduleTask(in: .milliseconds(config.timeout.milliseconds)) {
            [weak self] in
            guard let self, let held = self.held, held.ticket == ticket else { return }
            self.held = nil
            pool.state.cancel(held.id)
            ProxyMetrics.held(pool: pool.name, outcome: "timeout")
            self.fail(held.exchange, status: .serviceUnavailable, reason: "hold timeout")
        }
        self.held = (exchange, ticket, id, timer)
    }

    /// The pool can take work again: try the held exchange now.
    private func releaseHeld(_ ticket: Int) {
        guard let held = self.held, held.ticket == ticket, self.exchange === held.exchange else { return }
        self.held = nil
        held.timer.cancel()
        self.dispatch(held.exchange)
    }

    private func attach(_ handler: UpstreamHandler, to exchange: Exchange, reused: Bool) {
        guard let backend = exchange.backend else { return }
        handler.lease(to: self)
        self.upstream = handler
        exchange.upstreamWasReused = reused
        let upstreamHead = exchange.head.upstreamHead(
            route: exchange.route,
            backendAddress: backend.address,
            framing: exchange.framing,
            forwarding: ForwardingContext(
                downstreamIP: self.downstreamIP,
                requestID: exchange.requestID,
                scheme: self.scheme
            )
        )
        exchange.upstreamHead = upstreamHead
        exchange.bodyBytesSent = 0
        handler.write(.head(upstreamHead))
        for body in exchange.replay {
            exchange.bodyBytesSent += body.readableBytes
            handler.write(.body(.byteBuffer(body)))
        }
        let pending = exchange.pending
        exchange.pending = []
        for part in pending {
            switch part {
            case .body(let buffer): self.sendBody(buffer, on: handler, exchange: exchange)
            case .end: handler.write(.end(nil))
            case .head: break
            }
        }
        handler.flush()
        if exchange.requestEnded { self.armResponseTimer(exchange) }
        self.resumeReadsIfPossible()
    }

    private func sendBody(_ buffer: ByteBuffer, on upstream: UpstreamHandler, exchange: Exchange) {
        exchange.bodyBytesSent += buffer.readableBytes
        if exchange.head.isIdempotent || exchange.attempts == 1 { exchange.remember(buffer) }
        upstream.write(.body(.byteBuffer(buffer)))
    }

    private func armResponseTimer(_ exchange: Exchange) {
        guard !exchange.responseStarted else { return }
        self.responseTimer?.set(in: .milliseconds(exchange.pool.configuration.responseTimeout.milliseconds))
    }

    /// While a response body is being read: the backend has `response_timeout` to send its next bytes.
    private func armResponseReadTimer(_ exchange: Exchange) {
        self.responseTimer?.set(in: .milliseconds(exchange.pool.configuration.responseTimeout.milliseconds))
    }

    /// The current attempt failed: retry elsewhere when that is safe, else answer 502/504 or cut the response.
    private func upstreamFailed(_ exchange: Exchange, error: any Error, timedOut: Bool) {
        guard self.exchange === exchange else { return }
        self.responseTimer?.clear()
        if let upstream = self.upstream {
            upstream.delegate = nil
            upstream.close()
            self.upstream = nil
        }
        let backend = exchange.backend
        self.releaseBackend(exchange)
        self.accessLog.upstreamError(exchange, backend: backend, error: error)
        if let backend, !exchange.upstreamWasReused { self.recordFailure(of: backend, in: exchange.pool) }

        if !timedOut && exchange.isRetryable {
            if exchange.upstreamWasReused, let backend {
                // A pooled connection the backend had already closed: try the same backend on a fresh one.
                exchange.tried.removeAll { $0 == backend.index }
                exchange.attempts -= 1
                exchange.upstreamWasReused = false
                self.dispatch(exchange)
                return
            }
            if exchange.attempts <= exchange.pool.configuration.retries {
                self.dispatch(exchange)
                return
            }
        }
        if exchange.responseStarted {
            // Part of the response is already downstream: the only honest signal left is to cut the connection.
            self.exchange = nil
            self.record(
                exchange,
                status: exchange.responseStatus?.code ?? 502,
                downstreamIP: self.downstreamIP
            )
            self.context?.close(promise: nil)
            return
        }
        self.fail(exchange, status: timedOut ? .gatewayTimeout : .badGateway, reason: "\(error)")
    }

    /// Answers `exchange` locally with an error status.
    private func fail(_ exchange: Exchange, status: HTTPResponseStatus, reason: String) {
        guard let context = self.context else { return }
        self.exchange = nil
        self.releaseBackend(exchange)
        exchange.responseStatus = status
        self.record(exchange, status: status.code, downstreamIP: self.downstreamIP)
        let closing = self.prepareToDropBody(
            requestEnded: exchange.requestEnded,
            framing: exchange.framing,
            keepAlive: exchange.keepAlive && !exchange.head.stopsTheParser
        )
        self.writeLocalResponse(status, version: exchange.head.version, closing: closing, context: context)
        if !closing { self.drainPipelinedLater() }
    }

    private func answerLocally(
        _ status: HTTPResponseStatus,
        head: HTTPRequestHead,
        framing: RequestFraming,
        reason: String,
        context: ChannelHandlerContext
    ) {
        self.accessLog.rejected(head, status: status.code, reason: reason, downstreamIP: self.downstreamIP)
        // A client (or a proxy in front) that waits for 100 Continue may never send the body after a final
        // answer (RFC 9110 §10.1.1): reading on would take its next request for body bytes. Close instead.
        let awaitsContinue = framing != .none && head.headers.contains(name: "expect")
        let closing = self.prepareToDropBody(
            requestEnded: false,
            framing: framing,
            keepAlive: head.isKeepAlive && !head.stopsTheParser && !awaitsContinue
        )
        self.writeLocalResponse(status, version: head.version, closing: closing, context: context)
    }

    /// 308 to the same URL over https (the method and body are kept by the client, unlike 301). The head was
    /// inspected (Host is a valid authority) and its target normalized; a body is never read: the connection
    /// closes after the redirect instead.
    private func redirectToHTTPS(
        _ head: HTTPRequestHead,
        framing: RequestFraming,
        port: Int,
        context: ChannelHandlerContext
    ) {
        var host = head.headers.first(name: "host") ?? ""
        if !host.hasPrefix("["), let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        if let close = host.lastIndex(of: "]") { host = String(host[...close]) }
        guard !host.isEmpty else {
            self.refuse(head, RequestRejection(status: .badRequest, reason: "no Host to redirect to"), context: context)
            return
        }
        let location = "https://\(host)\(port == 443 ? "" : ":\(port)")\(head.uri.hasPrefix("/") ? head.uri : "/")"
        self.accessLog.rejected(head, status: 308, reason: "redirect to https", downstreamIP: self.downstreamIP)
        let closing = head.isKeepAlive && !head.stopsTheParser && framing == .none ? false : true
        if closing { self.isClosing = true }
        self.writeLocalResponse(
            .permanentRedirect,
            version: head.version,
            closing: closing,
            extraHeaders: [("location", location)],
            context: context
        )
    }

    /// After a local answer the rest of the request body is read and dropped when small, else the
    /// connection closes rather than read a large upload nobody wants.
    private func prepareToDropBody(requestEnded: Bool, framing: RequestFraming, keepAlive: Bool) -> Bool {
        var closing = !keepAlive
        if !requestEnded {
            switch framing {
            case .none: break
            case .contentLength(let length) where length <= 65_536: break
            case .contentLength, .chunked: closing = true
            }
            self.discardingBody = true
        }
        if closing { self.isClosing = true }
        return closing
    }

    private func recordFailure(of backend: Backend, in pool: BackendPool) {
        let state = pool.states[backend.index]
        if let ejected = state.recordFailure(passive: pool.configuration.passive) {
            ProxyMetrics.ejection(pool: pool.name, backend: backend.id)
            self.accessLog.logger.warning(
                "backend ejected after consecutive failures",
                metadata: [
                    "portico.pool": "\(pool.name)", "portico.backend": "\(backend.id)",
                    "portico.eject_ms": "\(ejected.milliseconds)",
                ]
            )
        }
    }

    private func releaseBackend(_ exchange: Exchange) {
        if let backend = exchange.backend {
            exchange.pool.load.end(backend)
            exchange.backend = nil
        }
    }

    /// The access log line and the request metrics of a finished exchange.
    private func record(_ exchange: Exchange, status: UInt, downstreamIP: String?) {
        self.accessLog.record(exchange, status: status, downstreamIP: downstreamIP)
        self.metrics.request(
            route: exchange.route.index,
            pool: exchange.pool.name,
            status: status,
            duration: NIODeadline.now() - exchange.started
        )
    }

    // MARK: Upstream events

    var isDownstreamWritable: Bool { self.context?.channel.isWritable ?? false }

    func upstreamResponsePart(_ part: HTTPClientResponsePart) {
        guard let exchange = self.exchange, let context = self.context else { return }
        switch part {
        case .head(let head):
            self.responseTimer?.clear()
            if head.status == .switchingProtocols {
                guard exchange.isWebSocket else {
                    // Nothing asked this backend to switch protocols (Upgrade was not forwarded).
                    self.upstream?.delegate = nil
                    self.upstream?.close()
                    self.upstream = nil
                    self.accessLog.upstreamError(
                        exchange,
                        backend: exchange.backend,
                        error: ProxyError.unexpectedUpgrade
                    )
                    self.fail(exchange, status: .badGateway, reason: "\(ProxyError.unexpectedUpgrade)")
                    return
                }
                guard Self.answersHandshake(head, of: exchange.head) else {
                    // Only a WebSocket server that read this client's key may turn the connection into a tunnel.
                    self.upstream?.delegate = nil
                    self.upstream?.close()
                    self.upstream = nil
                    ProxyMetrics.handshakeFailure(pool: exchange.pool.name, reason: "invalid_101")
                    self.accessLog.upstreamError(
                        exchange,
                        backend: exchange.backend,
                        error: ProxyError.invalidHandshake
                    )
                    if let backend = exchange.backend { self.recordFailure(of: backend, in: exchange.pool) }
                    self.fail(exchange, status: .badGateway, reason: "\(ProxyError.invalidHandshake)")
                    return
                }
                exchange.upgraded = true
                exchange.reservedBits = WebSocketFrameTracker.ReservedBits(
                    negotiated: head.headers["sec-websocket-extensions"]
                )
                exchange.responseStatus = head.status
                self.writeResponseHead(head, for: exchange, closing: false, context: context)
                return
            }
            // A refused handshake: the parser stopped after it, so the connection ends with this response.
            if exchange.isWebSocket {
                exchange.closeAfterResponse = true
                ProxyMetrics.handshakeFailure(pool: exchange.pool.name, reason: "backend_\(head.status.code)")
            }
            exchange.responseStatus = head.status
            if let backend = exchange.backend {
                if head.status.code >= 500 {
                    self.recordFailure(of: backend, in: exchange.pool)
                } else {
                    exchange.pool.states[backend.index].recordSuccess()
                }
            }
            exchange.upstreamReusable =
                head.isKeepAlive && (head.hasDelimitedBody || exchange.head.method == .HEAD)
            if !exchange.requestEnded {
                // Answered before the body ended: the rest of the body may still be in flight to the backend.
                exchange.closeAfterResponse = true
                exchange.upstreamReusable = false
            }
            let version = exchange.head.version
            let isHEAD = exchange.head.method == .HEAD
            let http10NeedsClose =
                version.major == 1 && version.minor == 0 && !isHEAD
                && !head.headers.contains(name: "content-length") && head.status.mayHaveResponseBody
            if !exchange.keepAlive || http10NeedsClose { exchange.closeAfterResponse = true }
            self.writeResponseHead(head, for: exchange, closing: exchange.closeAfterResponse, context: context)
            self.armResponseReadTimer(exchange)
        case .body(let buffer):
            self.armResponseReadTimer(exchange)
            exchange.responseBytes += buffer.readableBytes
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end:
            if exchange.upgraded {
                self.responseInProgress = false
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
                // Leave the decoders' call stacks before taking them out of the pipelines.
                context.eventLoop.assumeIsolated().execute { self.beginTunnel(exchange) }
                return
            }
            self.finish(exchange, context: context)
        }
    }

    /// A backend's 101 completes a WebSocket handshake only with `Upgrade: websocket` and the
    /// `Sec-WebSocket-Accept` computed from the client's key (RFC 6455 §4.2.2).
    static func answersHandshake(_ response: HTTPResponseHead, of request: HTTPRequestHead) -> Bool {
        guard response.headers.hasToken("websocket", in: "upgrade"),
            let key = request.headers.first(name: "sec-websocket-key")
        else { return false }
        let accepts = response.headers["sec-websocket-accept"]
        return accepts.count == 1 && accepts[0] == WebSocketAccept.expected(forKey: key)
    }

    /// Turns both connections into a WebSocket tunnel: the HTTP handlers leave both pipelines and a pair of
    /// ``TunnelHandler``s moves the bytes. Bytes either side sent after the handshake, still held by the HTTP
    /// decoders, go into the tunnel first.
    private func beginTunnel(_ exchange: Exchange) {
        guard self.exchange === exchange, let context = self.context, let upstream = self.upstream,
            let upstreamChannel = upstream.channel, let backend = exchange.backend
        else {
            if let exchange = self.exchange { self.releaseBackend(exchange) }
            self.context?.close(promise: nil)
            return
        }
        self.exchange = nil
        self.upstream = nil
        upstream.delegate = nil
        self.record(exchange, status: 101, downstreamIP: self.downstreamIP)
        let limits = exchange.route.websocket ?? WebSocketConfiguration()
        let session = TunnelSession(
            pool: exchange.pool,
            backend: backend,
            idleTimeout: .milliseconds(limits.idleTimeout.milliseconds),
            sendTimeout: .milliseconds(self.snapshot.configuration.limits.sendTimeout.milliseconds),
            eventLoop: context.eventLoop,
            logger: self.accessLog.logger,
            metrics: self.metrics.tunnel(pool: exchange.pool.name, backend: backend.id)
        )
        let down = TunnelHandler(
            side: .downstream,
            session: session,
            maxMessageBytes: limits.maxMessageBytes,
            reservedBits: exchange.reservedBits
        )
        let up = TunnelHandler(
            side: .upstream,
            session: session,
            maxMessageBytes: limits.maxMessageBytes,
            reservedBits: exchange.reservedBits
        )
        down.partner = up
        up.partner = down
        session.downstream = down
        session.upstream = up
        let downstreamChannel = context.channel
        do {
            let downstreamPipeline = downstreamChannel.pipeline.syncOperations
            let upstreamPipeline = upstreamChannel.pipeline.syncOperations
            try downstreamPipeline.addHandler(down)
            try upstreamPipeline.addHandler(up)
            func remove(_ pipeline: ChannelPipeline.SynchronousOperations, _ handler: ChannelHandlerContext) {
                pipeline.removeHandler(context: handler, promise: nil)
            }
            remove(downstreamPipeline, try downstreamPipeline.context(handlerType: DownstreamTimeoutHandler.self))
            remove(downstreamPipeline, try downstreamPipeline.context(handlerType: HTTPResponseEncoder.self))
            remove(upstreamPipeline, try upstreamPipeline.context(handlerType: UpstreamHandler.self))
            remove(upstreamPipeline, try upstreamPipeline.context(handlerType: HTTPRequestEncoder.self))
            remove(upstreamPipeline, try upstreamPipeline.context(handlerType: UpstreamIdleGuard.self))
            session.start()
            // Removing the decoders hands over whatever they hold past the handshake, as plain bytes.
            remove(
                upstreamPipeline,
                try upstreamPipeline.context(handlerType: ByteToMessageHandler<HTTPResponseDecoder>.self)
            )
            remove(downstreamPipeline, context)  // this handler: before the decoder hands over bytes
            remove(
                downstreamPipeline,
                try downstreamPipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
            )
            try? downstreamChannel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            try? upstreamChannel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            // The decoders hand over their bytes on the next loop tick, with no read-complete after them; flush
            // once they have.
            downstreamChannel.eventLoop.assumeIsolated().execute {
                down.flush()
                up.flush()
            }
            downstreamChannel.read()
            upstreamChannel.read()
        } catch {
            self.accessLog.logger.error("could not start a tunnel", metadata: ["portico.error": "\(error)"])
            downstreamChannel.close(promise: nil)
            upstreamChannel.close(promise: nil)
        }
    }

    /// Sends the backend's response head downstream: hop-by-hop headers gone, sticky cookie and HSTS added.
    private func writeResponseHead(
        _ head: HTTPResponseHead,
        for exchange: Exchange,
        closing: Bool,
        context: ChannelHandlerContext
    ) {
        var downstreamHead = head.downstreamHead(
            version: exchange.head.version,
            closing: closing,
            requestID: exchange.requestID
        )
        self.addStickyCookie(to: &downstreamHead, exchange: exchange)
        if self.scheme == "https", let hsts = exchange.route.hsts,
            !downstreamHead.headers.contains(name: "strict-transport-security")
        {
            downstreamHead.headers.add(name: "strict-transport-security", value: hsts)
        }
        self.responseInProgress = true
        context.write(Self.wrapOutboundOut(.head(downstreamHead)), promise: nil)
    }

    /// Pins the client to the backend that answered, unless its cookie already named that backend.
    private func addStickyCookie(to head: inout HTTPResponseHead, exchange: Exchange) {
        guard let cookie = exchange.pool.stickyCookie, let index = exchange.tried.last else { return }
        let token = exchange.pool.stickyTokens[index]
        guard exchange.stickyToken != token[...] else { return }
        head.headers.add(name: "set-cookie", value: "\(cookie)=\(token); Path=/; HttpOnly; SameSite=Lax")
    }

    /// Serves queued pipelined parts once nothing is in progress: every part up to the next head that has to
    /// wait again. Runs on a fresh stack (it may begin an exchange from within the end of another).
    private func drainPipelinedLater() {
        guard !self.pipelined.isEmpty, let context = self.context else { return }
        context.eventLoop.assumeIsolated().execute {
            guard let context = self.context else { return }
            while let next = self.pipelined.first {
                if self.isClosing {
                    self.pipelined.removeAll()
                    break
                }
                if next.isHead && self.isBusy { break }
                self.pipelined.removeFirst()
                self.handle(next, context: context)
            }
            self.upstream?.flush()
            self.resumeReadsIfPossible()
        }
    }

    private func finish(_ exchange: Exchange, context: ChannelHandlerContext) {
        self.responseTimer?.clear()
        let upstream = self.upstream
        self.upstream = nil
        self.exchange = nil
        self.releaseBackend(exchange)
        if let upstream {
            upstream.delegate = nil
            if exchange.requestEnded && exchange.upstreamReusable && !exchange.isWebSocket {
                self.upstreams.release(upstream)
            } else {
                upstream.close()
            }
        }
        self.record(exchange, status: exchange.responseStatus?.code ?? 0, downstreamIP: self.downstreamIP)
        self.responseInProgress = false
        let closing = exchange.closeAfterResponse
        if closing {
            self.isClosing = true
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            if !exchange.requestEnded { self.discardingBody = true }
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            if exchange.requestEnded { self.timeouts?.exchangeFinished() }
            self.drainPipelinedLater()
        }
    }

    func upstreamReadComplete() {
        self.context?.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard isWritable else { return }
        if let exchange = self.exchange, !exchange.requestEnded, !exchange.responseStarted {
            self.responseTimer?.clear()
        }
        self.resumeReadsIfPossible()
    }

    func upstreamClosed(error: (any Error)?) {
        guard let exchange = self.exchange else { return }
        self.upstreamFailed(exchange, error: error ?? ProxyError.upstreamClosed, timedOut: false)
    }

    // MARK: Local responses

    private func writeLocalResponse(
        _ status: HTTPResponseStatus,
        version: HTTPVersion,
        closing: Bool,
        extraHeaders: [(String, String)] = [],
        context: ChannelHandlerContext
    ) {
        let text = "\(status.code) \(status.reasonPhrase)\n"
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(text.utf8.count))
        if closing {
            headers.add(name: "connection", value: "close")
        } else if version.major == 1 && version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        if status == .serviceUnavailable { headers.add(name: "retry-after", value: "1") }
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let responseVersion: HTTPVersion = version.major == 1 && version.minor == 0 ? .http1_0 : .http1_1
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: responseVersion, status: status, headers: headers))),
            promise: nil
        )
        var body = context.channel.allocator.buffer(capacity: text.utf8.count)
        body.writeString(text)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if closing {
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            if !self.discardingBody { self.timeouts?.exchangeFinished() }
        }
    }
}

extension HTTPResponseStatus {
    var mayHaveResponseBody: Bool {
        let code = self.code
        return !(code < 200 || code == 204 || code == 304)
    }
}

/// Errors the proxy itself raises about an upstream.
enum ProxyError: Error, CustomStringConvertible {
    case upstreamClosed
    case responseTimeout
    case unexpectedUpgrade
    case invalidHandshake

    var description: String {
        switch self {
        case .invalidHandshake: return "upstream 101 without Upgrade: websocket and the right Sec-WebSocket-Accept"
        case .upstreamClosed: return "upstream closed the connection"
        case .responseTimeout: return "upstream response timeout"
        case .unexpectedUpgrade: return "upstream switched protocols unasked"
        }
    }
}

extension HTTPServerRequestPart {
    fileprivate var isHead: Bool {
        if case .head = self { true } else { false }
    }
}
