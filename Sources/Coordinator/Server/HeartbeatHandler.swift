import Foundation
import NIOCore
import Wire

/// Server side of the heartbeat: sends a Heartbeat every interval and closes a connection
/// whose peer was silent for three intervals (this also bounds a handshake or a Hello that
/// never comes). Every frame is passed on. Once the session says it is ending (`Ending`,
/// before its last frame), no more heartbeats are sent, so the session's closing Error is the
/// last frame the peer reads.
///
/// Silence is counted only while it is the peer's: while the pipeline has asked for a read
/// that has not come, or while a write waits for the peer to take it. While the session
/// itself stops reading (its frame loop waits for the store, a database restarting say) and
/// the peer takes what it is sent, the peer is not blamed: its frames wait in the socket and
/// are read when the session goes on. A peer that stops reading what it is sent is blamed
/// even though the session then stops reading it too.
final class HeartbeatHandler: ChannelDuplexHandler {
    /// The user outbound event a session triggers before its last frame.
    struct Ending: Sendable {}

    typealias InboundIn = Envelope
    typealias InboundOut = Envelope
    typealias OutboundIn = Envelope
    typealias OutboundOut = Envelope

    let interval: TimeAmount
    private var task: RepeatedTask?
    private var ending = false

    /// A read the pipeline asked for has not completed yet.
    private var readRequested = false
    /// Writes handed to the socket that it has not taken yet.
    private var writesWaiting = 0
    /// The peer's silence since its last frame, up to `countingSince`.
    private var silence = TimeAmount.zero
    /// Since when silence is being counted (a read or a write waits for the peer), or nil.
    private var countingSince: NIODeadline?

    init(interval: TimeAmount) {
        self.interval = interval
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        task = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.tick(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
    }

    /// Adds the time since the last change to the silence if it was the peer's, applies
    /// `change`, and starts counting again if the peer is now awaited.
    private func recount(_ context: ChannelHandlerContext, _ change: () -> Void = {}) {
        let now = context.eventLoop.now
        if let since = countingSince { silence = silence + (now - since) }
        change()
        countingSince = readRequested || writesWaiting > 0 ? now : nil
    }

    private func tick(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        recount(context)
        if silence > interval * 3 {
            let error = WireError(.unavailableOrClosed, "peer silent for three heartbeat intervals")
            context.writeAndFlush(wrapOutboundOut(.error(WireError(.failedPrecondition, "no frame for three heartbeat intervals; closing"))), promise: nil)
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        guard !ending else { return }
        var beat = Heddle_V1_Heartbeat()
        beat.sentAtMs = Date.nowMilliseconds
        let written = context.eventLoop.makePromise(of: Void.self)
        track(written.futureResult, context: context)
        context.writeAndFlush(wrapOutboundOut(Envelope(.heartbeat(beat))), promise: written)
    }

    /// Counts a write as waiting for the peer until the socket takes it (or it fails).
    private func track(_ written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        recount(context) { writesWaiting += 1 }
        written.assumeIsolated().whenComplete { [self] _ in
            recount(context) { writesWaiting -= 1 }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let written = promise ?? context.eventLoop.makePromise()
        track(written.futureResult, context: context)
        context.write(data, promise: written)
    }

    func read(context: ChannelHandlerContext) {
        recount(context) { readRequested = true }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        recount(context) { silence = .zero }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        recount(context) { readRequested = false }
        context.fireChannelReadComplete()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is Ending else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        ending = true
        promise?.succeed()
    }
}
