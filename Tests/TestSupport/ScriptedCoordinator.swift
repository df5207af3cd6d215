import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Wire

/// A coordinator of a test's own, for checking what a runner sends and in which order: it
/// welcomes every connection, pushes one assignment (a job of one node) on the first, answers
/// every request `Ok`, acknowledges log bytes as soon as they arrive, and records, connection
/// by connection, what the runner sent. `cut` may close the first connection early, so the
/// runner must send the log again on its next one.
public final class ScriptedCoordinator: Sendable {
    /// When the first connection is closed.
    public enum Cut: Sendable {
        /// Never.
        case never
        /// When its first `LogAppend` arrives (not acknowledged).
        case atFirstLog
        /// When a node's end arrives (not answered); no log byte is acknowledged on it.
        case atNodeEnd
    }

    /// What a runner sent, as far as ordering goes.
    public enum Sent: Sendable, Equatable {
        case log(node: String, offset: UInt64, count: Int)
        case nodeUpdate(node: String, status: Heddle_V1_Status)
        case jobFinish(status: Heddle_V1_Status)
        case other(String)
    }

    public let port: Int
    private let server: Channel
    private let state: Shared

    final class Shared: Sendable {
        struct State {
            var connections: [[Sent]] = []
        }
        let mutex = Mutex(State())
        let assignment: Heddle_V1_Assignment
        let cut: Cut
        init(assignment: Heddle_V1_Assignment, cut: Cut) {
            self.assignment = assignment
            self.cut = cut
        }
    }

    /// `node`'s command is run by `/bin/sh -c` as job 1 (epoch 1) of run 1.
    public init(tls: TLSFiles, node: String, run: String, cut: Cut) async throws {
        var spec = Heddle_V1_NodeSpec()
        spec.name = node
        spec.run = run
        var assignment = Heddle_V1_Assignment()
        assignment.job.jobID = 1
        assignment.job.attempt = 1
        assignment.job.epoch = 1
        assignment.runID = 1
        assignment.project = "shop"
        assignment.pipeline = "scripted"
        assignment.jobName = "work"
        assignment.branch = "main"
        assignment.nodes = [spec]
        let state = Shared(assignment: assignment, cut: cut)
        self.state = state
        server = try await TestCoordinatorServer.listen(tls: tls) {
            try $0.addFrameCodec(maximumFrameLength: Frame.defaultMaximumLength)
            try $0.addHandler(Handler(state: state))
        }
        port = server.localAddress?.port ?? 0
    }

    /// What each connection carried, in the order it arrived (connections in the order their
    /// Hello was answered).
    public var connections: [[Sent]] { state.mutex.withLock { $0.connections } }

    public func stop() async {
        try? await server.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = Envelope
        typealias OutboundOut = Envelope
        let state: Shared
        /// This connection's index in `connections`, once its Hello came.
        var index: Int?
        /// Per node: the bytes acknowledged on this connection.
        var durable: [String: UInt64] = [:]
        /// Cut: frames that were already read are not looked at.
        var cut = false

        init(state: Shared) { self.state = state }

        func record(_ sent: Sent) {
            guard let index else { return }
            state.mutex.withLock { $0.connections[index].append(sent) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard !cut else { return }
            switch envelope.body {
            case .hello:
                let index = state.mutex.withLock { state -> Int in
                    state.connections.append([])
                    return state.connections.count - 1
                }
                self.index = index
                let welcome = TestCoordinatorServer.welcome(session: "scripted-\(index)")
                context.write(wrapOutboundOut(Envelope(id: envelope.id, .welcome(welcome))), promise: nil)
                if index == 0 { context.write(wrapOutboundOut(Envelope(.assignment(state.assignment))), promise: nil) }
                context.flush()
                return
            case .logAppend(let append):
                record(.log(node: append.node, offset: append.offset, count: append.data.count))
                if index == 0 && state.cut != .never {
                    if state.cut == .atFirstLog { close(context) }
                    return
                }
                let end = append.offset + UInt64(append.data.count)
                if append.offset <= durable[append.node, default: 0] && end > durable[append.node, default: 0] {
                    durable[append.node] = end
                }
                var ack = Heddle_V1_LogAck()
                ack.jobID = append.job.jobID
                ack.epoch = append.job.epoch
                ack.node = append.node
                ack.durableOffset = durable[append.node, default: 0]
                context.writeAndFlush(wrapOutboundOut(Envelope(.logAck(ack))), promise: nil)
                return
            case .nodeUpdate(let update):
                record(.nodeUpdate(node: update.node, status: update.status))
                if index == 0 && state.cut == .atNodeEnd && update.status != .running {
                    close(context)
                    return
                }
            case .jobFinish(let finish):
                record(.jobFinish(status: finish.status))
            case let body?:
                record(.other("\(body)".prefix(40).description))
            case nil:
                record(.other("unknown"))
            }
            if envelope.id != 0 { context.writeAndFlush(wrapOutboundOut(.ok(id: envelope.id)), promise: nil) }
        }

        func close(_ context: ChannelHandlerContext) {
            cut = true
            context.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
