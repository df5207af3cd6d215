import Coordinator
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization

/// How many connections the HTTP front holds and how long it waits for each: what keeps idle
/// or slow clients from holding the coordinator's descriptors (README, "The HTTP front under
/// load").
public struct HTTPConnectionLimits: Sendable {
    /// Connections open at once (`--max-http-connections`). A new one past it takes the place
    /// of one waiting for a request (one that never sent a byte first, then the one waiting
    /// longest); when every one is busy with a request, the new one is closed at once.
    public var maximumConnections = 1024
    /// From accept to the first request's complete header: the TLS handshake and the header.
    public var firstRequest: Duration = .seconds(10)
    /// Between the end of a response and the next request's complete header (keep-alive).
    public var idle: Duration = .seconds(30)
    /// Between two pieces of a request's body.
    public var bodyStall: Duration = .seconds(30)

    public init() {}

    /// The HTTP front's cap made to fit `descriptors` open files beside the binary port's:
    /// unchanged when both fit beside the reserve; otherwise at most half of what is left
    /// (at least 16), so idle HTTP clients can never take the descriptors runners and the
    /// CLI need.
    public static func fit(descriptors: Int, binary: Int, http: Int) -> Int {
        let reserve = min(DescriptorLimit.reserve, descriptors / 4)
        let available = max(32, descriptors - reserve)
        guard binary + http > available else { return http }
        return min(http, max(16, available / 2))
    }
}

/// The HTTP front's open connections: counted against the cap, each with when it began to
/// wait for a request (nil while a request is read or answered).
final class HTTPConnections: Sendable {
    let limits: HTTPConnectionLimits
    private struct Entry {
        var channel: any Channel
        var waitingSince: NIODeadline?
        /// Whether a byte came from the client yet (a TLS ClientHello, a request line).
        var spoke = false
    }
    private let state = Mutex<[ObjectIdentifier: Entry]>([:])
    private let refusals: RateLimitedLog

    init(limits: HTTPConnectionLimits, refusals: RateLimitedLog) {
        self.limits = limits
        self.refusals = refusals
    }

    var count: Int { state.withLock { $0.count } }

    /// Counts a new connection. At the cap, a connection waiting for a request is closed to
    /// make room: one that has not sent a byte yet first, then the one waiting longest; when
    /// none waits, returns false (the new one is to be closed).
    func open(_ id: ObjectIdentifier, channel: any Channel, now: NIODeadline) -> Bool {
        let (admitted, evicted) = state.withLock { entries -> (Bool, (any Channel)?) in
            var evicted: (any Channel)?
            if entries.count >= limits.maximumConnections {
                func before(_ a: Entry, _ b: Entry) -> Bool {
                    a.spoke != b.spoke ? !a.spoke : a.waitingSince! < b.waitingSince!
                }
                guard let oldest = entries.filter({ $0.value.waitingSince != nil })
                    .min(by: { before($0.value, $1.value) }) else { return (false, nil) }
                entries[oldest.key] = nil
                evicted = oldest.value.channel
            }
            entries[id] = Entry(channel: channel, waitingSince: now)
            return (true, evicted)
        }
        if let evicted {
            refusals.warning("HTTP connections at the cap (\(limits.maximumConnections), --max-http-connections): closing the one idle longest for a new one")
            evicted.close(promise: nil)
        } else if !admitted {
            refusals.warning("HTTP connections at the cap (\(limits.maximumConnections), --max-http-connections), all busy: refusing a new one")
        }
        return admitted
    }

    func spoke(_ id: ObjectIdentifier) {
        state.withLock { entries in entries[id]?.spoke = true }
    }

    func waiting(_ id: ObjectIdentifier, since: NIODeadline?) {
        state.withLock { entries in entries[id]?.waitingSince = since }
    }

    func close(_ id: ObjectIdentifier) {
        _ = state.withLock { $0.removeValue(forKey: id) }
    }
}

/// One connection's guard, after the HTTP codec: counts it against the cap, closes it when a
/// request's header does not come in time (the first after `firstRequest`, covering the TLS
/// handshake; later ones after `idle`) or its body stalls past `bodyStall`, and closes it
/// after a response that says `Connection: close` (a refusal that leaves a body unread).
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let connections: HTTPConnections
    private var id: ObjectIdentifier { ObjectIdentifier(self) }
    private var registered = false
    /// Requests whose response has not ended.
    private var inProgress = 0
    private var readingBody = false
    private var closeAfterResponse = false
    private var timer: Scheduled<Void>?

    init(connections: HTTPConnections) {
        self.connections = connections
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Read little ahead of what a handler takes: a client that sends a body nobody wants
        // (a delivery refused from its headers) makes the coordinator hold at most this much.
        if let options = context.channel.syncOptions {
            try? options.setOption(.maxMessagesPerRead, value: 1)
            try? options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 64 << 10))
        }
        registered = connections.open(id, channel: context.channel, now: .now())
        if registered {
            arm(context, after: connections.limits.firstRequest)
            // In front of TLS: marks the connection once its client sends anything.
            try? context.pipeline.syncOperations.addHandler(FirstByte(connections: connections, id: id), position: .first)
        } else {
            // Refused at the cap: closed once the pipeline being set up is done.
            let channel = context.channel
            context.eventLoop.execute { channel.close(promise: nil) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        if registered { connections.close(id) }
        registered = false
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        if registered { connections.close(id) }
        registered = false
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inProgress += 1
            readingBody = true
            connections.waiting(id, since: nil)
            arm(context, after: connections.limits.bodyStall)
        case .body:
            arm(context, after: connections.limits.bodyStall)
        case .end:
            readingBody = false
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            inProgress = max(0, inProgress - 1)
            if closeAfterResponse {
                context.writeAndFlush(data, promise: promise)
                context.close(promise: nil)
                return
            }
            context.write(data, promise: promise)
            if inProgress == 0, !readingBody {
                connections.waiting(id, since: .now())
                arm(context, after: connections.limits.idle)
            }
        }
    }

    /// (Re)starts the one timer: when it fires with nothing answered since, the connection closes.
    private func arm(_ context: ChannelHandlerContext, after delay: Duration) {
        disarm()
        let loop = context.eventLoop.assumeIsolatedUnsafeUnchecked()
        let channel = context.channel
        timer = loop.scheduleTask(in: .nanoseconds(Int64(delay / .nanoseconds(1)))) { [self] in
            timer = nil
            // A request being answered (its body read) is the handler's to finish.
            guard readingBody || inProgress == 0 else { return }
            channel.close(promise: nil)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

/// The first handler of a connection until its client sends a byte: tells `HTTPConnections`
/// (a connection that never spoke is the first to make room at the cap), then leaves.
final class FirstByte: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let connections: HTTPConnections
    private let id: ObjectIdentifier

    init(connections: HTTPConnections, id: ObjectIdentifier) {
        self.connections = connections
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connections.spoke(id)
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Adds `AcceptErrorLogger` in front of the HTTP listener, so running out of descriptors
/// pauses accepting instead of spinning (as on the binary port).
enum HTTPListener {
    static func guardAccepts(_ channel: any Channel, log: RateLimitedLog) {
        channel.eventLoop.execute {
            try? channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(log: log), position: .first)
        }
    }
}

/// Bytes held against a shared limit: what clients not yet verified may make the coordinator
/// hold, across all connections.
final class ByteBudget: Sendable {
    let limit: Int
    private let used = Mutex(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Holds `bytes` more, unless that would pass the limit.
    func take(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard bytes <= limit - used else { return false }
            used += bytes
            return true
        }
    }

    func give(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.withLock { $0 -= bytes }
    }
}
