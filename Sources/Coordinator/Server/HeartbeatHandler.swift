import Foundation
import NIOCore
import Wire

/// Server side of the heartbeat: sends a Heartbeat every interval and closes a connection
/// that sent nothing for three intervals (this also bounds a handshake or a Hello that never
/// comes). Every frame is passed on. Once the session says it is ending (`Ending`, before its
/// last frame), no more heartbeats are sent, so the session's closing Error is the last frame
/// the peer reads.
final class HeartbeatHandler: ChannelDuplexHandler {
    /// The user outbound event a session triggers before its last frame.
    struct Ending: Sendable {}

    typealias InboundIn = Envelope
    typealias InboundOut = Envelope
    typealias OutboundIn = Envelope
    typealias OutboundOut = Envelope

    let interval: TimeAmount
    private var lastRead = NIODeadline.now()
    private var task: RepeatedTask?
    private var ending = false

    init(interval: TimeAmount) {
        self.interval = interval
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastRead = .now()
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

    private func tick(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        if NIODeadline.now() - lastRead > interval * 3 {
            let error = WireError(.unavailableOrClosed, "peer silent for three heartbeat intervals")
            context.writeAndFlush(wrapOutboundOut(.error(WireError(.failedPrecondition, "no frame for three heartbeat intervals; closing"))), promise: nil)
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        guard !ending else { return }
        var beat = Heddle_V1_Heartbeat()
        beat.sentAtMs = Date.nowMilliseconds
        context.writeAndFlush(wrapOutboundOut(Envelope(.heartbeat(beat))), promise: nil)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is Ending else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        ending = true
        promise?.succeed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        context.fireChannelRead(data)
    }
}
