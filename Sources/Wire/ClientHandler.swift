import Foundation
import NIOCore

/// The client end of a session: matches responses to request ids, hands every other frame
/// to `pushes`, answers nothing by itself, and keeps the heartbeat. Its state is touched only
/// on its channel's event loop (every entry point hops there first).
final class ClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Envelope
    typealias OutboundOut = Envelope

    private var pending: [UInt64: EventLoopPromise<Envelope>] = [:]
    private var nextID: UInt64 = 1
    private var context: ChannelHandlerContext?
    private var heartbeatTask: RepeatedTask?
    private var lastRead = NIODeadline.now()
    private var closeReason: WireError?
    let pushes: AsyncStream<Envelope>
    private let pushContinuation: AsyncStream<Envelope>.Continuation
    /// A runner's jobs, sent with each heartbeat.
    private let running: (@Sendable () -> Heddle_V1_RunningJobs)?

    init(running: (@Sendable () -> Heddle_V1_RunningJobs)? = nil) {
        (pushes, pushContinuation) = AsyncStream.makeStream(of: Envelope.self)
        self.running = running
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Sends a request and completes with its response. Must run on the event loop.
    func request(_ body: Envelope.OneOf_Body, promise: EventLoopPromise<Envelope>) {
        guard let context, context.channel.isActive else {
            promise.fail(closeReason ?? WireError(.unavailableOrClosed, "the connection to the coordinator is closed"))
            return
        }
        let id = nextID
        nextID += 1
        pending[id] = promise
        context.writeAndFlush(wrapOutboundOut(Envelope(id: id, body)), promise: nil)
    }

    /// Sends a frame that expects no response; completes when written. Must run on the event loop.
    func send(_ envelope: Envelope, promise: EventLoopPromise<Void>?) {
        guard let context, context.channel.isActive else {
            promise?.fail(closeReason ?? WireError(.unavailableOrClosed, "the connection to the coordinator is closed"))
            return
        }
        context.writeAndFlush(wrapOutboundOut(envelope), promise: promise)
    }

    func startHeartbeat(interval: TimeAmount) {
        guard let context, heartbeatTask == nil, interval > .zero else { return }
        lastRead = .now()
        heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
            self?.heartbeatTick(interval: interval)
        }
    }

    private func heartbeatTick(interval: TimeAmount) {
        guard let context else { return }
        if NIODeadline.now() - lastRead > interval * 3 {
            fail(WireError(.unavailableOrClosed, "the coordinator was silent for three heartbeat intervals"))
            context.close(promise: nil)
            return
        }
        var beat = Heddle_V1_Heartbeat()
        beat.sentAtMs = Int64(Date.nowMilliseconds)
        if let running { beat.running = running() }
        context.writeAndFlush(wrapOutboundOut(Envelope(.heartbeat(beat))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        lastRead = .now()
        if case .heartbeat = envelope.body { return }
        // A push from a newer coordinator that this version does not know: ignored.
        if envelope.body == nil && envelope.id == 0 { return }
        if envelope.id != 0, let promise = pending.removeValue(forKey: envelope.id) {
            if case .error(let error) = envelope.body {
                promise.fail(WireError(error))
            } else {
                promise.succeed(envelope)
            }
            return
        }
        if envelope.id == 0, case .error(let error) = envelope.body {
            closeReason = WireError(error)
        }
        pushContinuation.yield(envelope)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Before Welcome a TLS error means a refused certificate; after it, a broken connection.
        let described = WireError.describing(error)
        fail(heartbeatTask == nil ? described
             : WireError(.unavailableOrClosed, "the connection to the coordinator failed: \(described.message)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(closeReason ?? WireError(.unavailableOrClosed, "the coordinator closed the connection"))
        heartbeatTask?.cancel()
        heartbeatTask = nil
        pushContinuation.finish()
        context.fireChannelInactive()
    }

    private func fail(_ error: WireError) {
        if closeReason == nil { closeReason = error }
        let waiting = pending
        pending.removeAll()
        for promise in waiting.values { promise.fail(closeReason ?? error) }
    }
}

extension Heddle_V1_ErrorCode {
    /// A local code for a connection that is gone; never sent on the wire.
    public static let unavailableOrClosed = Heddle_V1_ErrorCode.UNRECOGNIZED(1000)
}

extension WireError {
    /// Wraps any error (TLS, I/O, decoding) in one sentence a user can act on.
    public static func describing(_ error: Error) -> WireError {
        if let error = error as? WireError { return error }
        let text = String(describing: error)
        if let reason = tlsReason(text) {
            return WireError(.unauthenticated, tlsExplanation(reason))
        }
        if text.contains("NIOSSL") || text.contains("SSL") || text.contains("handshake") {
            return WireError(.unauthenticated,
                             "TLS failed (\(text)): check that --ca is the fabric's CA and that the certificate was issued by it and is valid")
        }
        if text.contains("Connection refused") {
            return WireError(.unavailableOrClosed, "connection refused (is heddle-coordinator listening there?)")
        }
        return WireError(.unavailableOrClosed, "connection failed: \(text)")
    }

    /// The BoringSSL reason in an error's text, e.g. CERTIFICATE_VERIFY_FAILED.
    public static func tlsReason(_ text: String) -> String? {
        guard let range = text.range(of: "OPENSSL_internal:") else { return nil }
        let reason = text[range.upperBound...].prefix { $0.isUppercase || $0.isNumber || $0 == "_" }
        return reason.isEmpty ? nil : String(reason)
    }

    static func tlsExplanation(_ reason: String) -> String {
        switch reason {
        case "CERTIFICATE_VERIFY_FAILED":
            return "TLS: the certificate could not be verified (CERTIFICATE_VERIFY_FAILED): it was not issued by the trusted CA, has expired, or does not name this host; check --ca and the certificate"
        case "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_DECRYPT_ERROR":
            return "TLS: the coordinator refused this certificate (\(reason)): it was not issued by the fabric's CA"
        case "SSLV3_ALERT_CERTIFICATE_EXPIRED":
            return "TLS: the coordinator refused this certificate (\(reason)): by the coordinator's clock it has expired or is not valid yet; check both machines' clocks, or issue a new one with `heddle certs issue`"
        case "TLSV1_ALERT_CERTIFICATE_REQUIRED", "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "TLS: a client certificate is required (\(reason)); pass --cert and --key"
        case "TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL":
            return "TLS: the peer does not speak TLS 1.3 (\(reason))"
        default:
            return "TLS failed (\(reason)): check that --ca is the fabric's CA and that the certificate was issued by it and is valid"
        }
    }
}
