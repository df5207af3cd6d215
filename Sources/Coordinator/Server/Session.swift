import Logging
import Synchronization
import NIOCore
import NIOSSL
import Wire

/// One connection: Hello first, then requests dispatched to the core with the role of the
/// peer's certificate checked. Frames the core pushes go through an `Outbox` drained by a
/// writer task. Errors are caught here: a bad request gets an Error response, broken framing
/// gets an Error frame and the connection closes; nothing escapes to the server.
struct Session {
    let id: UInt64
    let core: CoordinatorCore
    let logger: Logger
    let heartbeatInterval: TimeAmount

    func run(_ connection: NIOAsyncChannel<Envelope, Envelope>) async {
        var logger = self.logger
        logger[metadataKey: "session"] = "\(id)"
        if let remote = connection.channel.remoteAddress { logger[metadataKey: "peer"] = "\(remote)" }
        do {
            try await connection.executeThenClose { inbound, _ in
                let (stream, continuation) = AsyncStream.makeStream(
                    of: Envelope.self, bufferingPolicy: .bufferingOldest(core.limits.maximumPendingFrames))
                let channel = connection.channel
                let budget = Outbox.Budget()
                let outbox = Outbox(continuation, overflow: { [logger] in
                    logger.warning("closing a session that does not read what it is sent")
                    channel.close(promise: nil)
                }, budget: budget)
                let watches = WatchCount()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Every frame goes through this one path, so their order is kept. A bulk
                    // frame (log bytes, artifact data) is awaited until the socket took it, so
                    // the budget counts exactly what waits and readers of stored logs keep the
                    // peer's pace; any frame is awaited while the connection is not writable,
                    // so a peer that does not read stops the writer, the outbox fills and the
                    // session closes. (The async channel's own writer returns once a frame is
                    // handed over and its writability flag lags: with it, tens of MiB could
                    // queue per connection.)
                    group.addTask {
                        for await envelope in stream {
                            let written = channel.eventLoop.makePromise(of: Void.self)
                            channel.writeAndFlush(envelope, promise: written)
                            if Outbox.weight(envelope) > 0 || !channel.isWritable { try await written.futureResult.get() }
                            budget.written(envelope)
                        }
                    }
                    do {
                        var frames = inbound.makeAsyncIterator()
                        guard let first = try await frames.next() else {
                            continuation.finish()
                            return
                        }
                        let identity = try await PeerIdentity.of(channel: connection.channel)
                        logger[metadataKey: "identity"] = "\(identity)"
                        try await core.sessionOpened(session: id, identity: identity, close: { channel.close(promise: nil) })
                        guard case .hello(let hello) = first.body else {
                            throw WireError(.badRequest, "the first frame must be Hello")
                        }
                        guard hello.protocolVersion == HeddleVersion.protocolVersion else {
                            outbox.send(.error(id: first.id, WireError(.unsupportedVersion,
                                "protocol version \(hello.protocolVersion) is not supported; this coordinator speaks \(HeddleVersion.protocolVersion)")))
                            continuation.finish()
                            return
                        }
                        outbox.send(Envelope(id: first.id, .welcome(welcome(identity))))
                        if identity.role == .runner {
                            await core.runnerConnected(session: id, identity: identity, hello: hello, outbox: outbox)
                        }
                        logger.debug("session started")
                        while let envelope = try await frames.next() {
                            // A watch lasts until its end: it runs beside the session's
                            // other requests, a bounded number at once.
                            if case .watch = envelope.body, identity.role != .runner {
                                guard watches.open() else {
                                    outbox.send(.error(id: envelope.id, WireError(.resourceExhausted,
                                        "a session may have \(CoordinatorCore.maximumWatchesPerSession) watches open at once")))
                                    continue
                                }
                                group.addTask { [logger] in
                                    await handle(envelope, identity: identity, outbox: outbox, logger: logger)
                                    watches.close()
                                }
                                continue
                            }
                            await handle(envelope, identity: identity, outbox: outbox, logger: logger)
                        }
                    } catch {
                        if let wire = error as? WireError {
                            outbox.send(.error(wire))
                            logger.info("session closed on error", metadata: ["error": "\(wire.message)"])
                        } else if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
                            logger.debug("peer closed without TLS close_notify")
                        } else {
                            let text = String(describing: error)
                            let reason = WireError.tlsReason(text).map { "TLS handshake failed: \($0)" } ?? text
                            logger.info("session closed on error", metadata: ["error": "\(reason)"])
                        }
                    }
                    continuation.finish()
                    budget.close()
                    await core.endWatches(session: id)
                    try await group.waitForAll()
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
        await core.sessionClosed(session: id)
    }

    func welcome(_ identity: PeerIdentity) -> Heddle_V1_Welcome {
        var welcome = Heddle_V1_Welcome()
        welcome.sessionID = String(id)
        welcome.heartbeatIntervalMs = UInt32(heartbeatInterval.nanoseconds / 1_000_000)
        welcome.maxFrameBytes = UInt32(core.limits.maximumFrameLength)
        welcome.peerName = identity.name
        welcome.role = identity.role.rawValue
        welcome.maxArtifactChunkBytes = UInt32(core.limits.maximumArtifactChunk)
        return welcome
    }

    /// Handles one frame. Never throws: failures become Error frames.
    func handle(_ envelope: Envelope, identity: PeerIdentity, outbox: Outbox, logger: Logger) async {
        do {
            if let response = try await respond(to: envelope, identity: identity, outbox: outbox) {
                outbox.send(Envelope(id: envelope.id, response))
            }
        } catch {
            let wire = Self.wire(error)
            if wire.code == .internal { logger.error("request failed", metadata: ["error": "\(error)"]) }
            outbox.send(.error(id: envelope.id, wire))
            if wire.code == .staleEpoch, let jobID = Self.jobID(of: envelope) {
                outbox.send(.stopJob(jobID, reason: wire.message, abandon: true))
            }
        }
    }

    /// What the peer is told about an error.
    static func wire(_ error: any Error) -> WireError {
        if let wire = error as? WireError { return wire }
        if let store = error as? StoreError {
            switch store.code {
            case .staleLease: return WireError(.staleEpoch, store.message)
            case .notFound: return WireError.notFound(store.message)
            case .inconsistent: return WireError(.internal, "the coordinator's data is inconsistent: \(store.message)")
            }
        }
        return WireError(.internal, "internal error: \(error)")
    }

    static func jobID(of envelope: Envelope) -> UInt64? {
        switch envelope.body {
        case .jobStarted(let m): m.job.jobID
        case .nodeUpdate(let m): m.job.jobID
        case .logAppend(let m): m.job.jobID
        case .artifactDeclare(let m): m.job.jobID
        case .artifactChunk(let m): m.job.jobID
        case .artifactCommit(let m): m.job.jobID
        case .jobFinish(let m): m.job.jobID
        default: nil
        }
    }

    func require(_ action: Action, _ identity: PeerIdentity) throws(WireError) {
        try Authorization.check(Principal(identity), action)
    }

    /// The response body for a request, or nil for one-way frames.
    func respond(to envelope: Envelope, identity: PeerIdentity, outbox: Outbox) async throws -> Envelope.OneOf_Body? {
        switch envelope.body {
        case .heartbeat:
            await core.heartbeat(session: id)
            return nil
        case .hello:
            throw WireError(.badRequest, "Hello was already sent on this connection")

        case .nodeUpdate(let update):
            try require(.runJobs, identity)
            try await core.nodeUpdate(session: id, update)
            return .ok(Heddle_V1_Ok())
        case .logAppend(let append):
            try require(.runJobs, identity)
            // Acknowledged by the group commit, unless nothing new needs one.
            if let durable = try await core.queueLog(session: id, append) {
                var ack = Heddle_V1_LogAck()
                ack.jobID = append.job.jobID
                ack.node = append.node
                ack.durableOffset = durable
                outbox.send(Envelope(.logAck(ack)))
            }
            return nil
        case .artifactDeclare(let declare):
            try require(.runJobs, identity)
            return .artifactDeclared(try await core.declareArtifact(session: id, declare))
        case .artifactChunk(let chunk):
            try require(.runJobs, identity)
            try await core.artifactChunk(session: id, chunk)
            return nil
        case .artifactCommit(let commit):
            try require(.runJobs, identity)
            return .artifactCommitted(try await core.commitArtifact(session: id, commit))
        case .jobStarted(let started):
            try require(.runJobs, identity)
            try await core.jobStarted(session: id, started)
            return .ok(Heddle_V1_Ok())
        case .drainSelf:
            try require(.runJobs, identity)
            await core.drainSelf(session: id)
            return .ok(Heddle_V1_Ok())
        case .jobFinish(let finish):
            try require(.runJobs, identity)
            try await core.jobFinished(session: id, finish)
            return .ok(Heddle_V1_Ok())

        case .pipelinePush(let push):
            try require(.pushPipeline, identity)
            return .pipelinePushed(try await core.pushPipeline(push))
        case .pipelineList:
            try require(.listPipelines, identity)
            var list = Heddle_V1_PipelineList()
            list.pipelines = try await core.pipelines()
            return .pipelines(list)
        case .trigger(let trigger):
            try require(.trigger, identity)
            var triggered = Heddle_V1_Triggered()
            triggered.runID = UInt64(try await core.trigger(trigger, trigger: identity.role == .admin ? "manual" : "api"))
            triggered.attempt = 1  // a trigger makes a new run, whose first attempt this is
            return .triggered(triggered)
        case .runList(let request):
            try require(.listRuns, identity)
            var list = Heddle_V1_RunList()
            let filter = RunFilter(project: request.project.isEmpty ? nil : request.project,
                                   pipeline: request.pipeline.isEmpty ? nil : request.pipeline,
                                   branch: request.branch.isEmpty ? nil : request.branch,
                                   status: Status(request.status))
            list.runs = try await core.runs(limit: request.limit == 0 ? 50 : Int(min(request.limit, 10_000)), filter: filter)
            return .runs(list)
        case .rerun(let request):
            try require(.rerun, identity)
            let (runID, attempt) = try await core.rerun(runID: Int64(request.runID),
                                                        trigger: identity.role == .admin ? "manual" : "api")
            var triggered = Heddle_V1_Triggered()
            triggered.runID = UInt64(runID)
            triggered.attempt = UInt32(attempt)
            return .triggered(triggered)
        case .cancel(let request):
            try require(.cancel, identity)
            guard !request.runIds.isEmpty || !request.jobIds.isEmpty else {
                throw WireError.invalid("cancel needs at least one run or job id")
            }
            return .cancelled(try await core.cancel(runIDs: request.runIds.map { Int64($0) },
                                                    jobIDs: request.jobIds.map { Int64($0) }, by: identity))
        case .bulkCancel(let request):
            try require(.bulkCancel, identity)
            return .cancelled(try await core.bulkCancel(request, by: identity))
        case .queueMove(let request):
            try require(.moveInQueue, identity)
            let target: Scheduler.MoveTarget
            switch request.target {
            case .top: target = .top
            case .bottom: target = .bottom
            case .beforeJob(let other): target = .before(Int64(other))
            case .afterJob(let other): target = .after(Int64(other))
            case .position(let n):
                guard n >= 1 else { throw WireError.invalid("queue positions start at 1") }
                target = .position(Int(n))
            case .none: throw WireError.invalid("queue move needs a target: top, bottom, before, after or position")
            }
            var list = Heddle_V1_QueueList()
            list.jobs = [try await core.move(jobID: Int64(request.jobID), to: target)]
            return .queueList(list)
        case .queueWatch:
            try require(.watchQueue, identity)
            guard envelope.id != 0 else { throw WireError(.badRequest, "a QueueWatch request needs a non-zero id") }
            await core.watchQueue(session: id, requestID: envelope.id, outbox: outbox)
            return nil
        case .projectCreate(let request):
            try require(.createProject, identity)
            let project = try await core.createProject(name: request.name, repository: request.repository)
            var list = Heddle_V1_ProjectList()
            var info = Heddle_V1_ProjectInfo()
            info.name = project.name
            info.repository = project.repository
            info.createdAtMs = project.createdAt
            list.projects = [info]
            return .projects(list)
        case .projectList:
            try require(.listProjects, identity)
            var list = Heddle_V1_ProjectList()
            list.projects = try await core.projects()
            return .projects(list)
        case .revoke(let request):
            try require(.revoke, identity)
            let fingerprint = request.fingerprint.isEmpty ? nil : request.fingerprint
            if let fingerprint, fingerprint.count != 64 || !fingerprint.allSatisfy(\.isHexDigit) {
                throw WireError.invalid("a fingerprint is the 64 hex digits of the certificate's SHA-256")
            }
            var result = Heddle_V1_RevokeResult()
            result.sessionsClosed = UInt32(try await core.revoke(name: request.name.isEmpty ? nil : request.name,
                                                                 fingerprint: fingerprint))
            return .revoked(result)
        case .runnerDrain(let request):
            try require(.drainRunner, identity)
            var list = Heddle_V1_RunnerList()
            list.runners = try await core.setDrained(runner: request.name, request.drained)
            return .runnerList(list)
        case .runGet(let request):
            try require(.showRun, identity)
            return .run(try await core.runDetail(runID: Int64(request.runID),
                                                 attempt: request.attempt == 0 ? nil : Int(request.attempt)))
        case .watch(let request):
            try require(.watchRun, identity)
            guard envelope.id != 0 else { throw WireError(.badRequest, "a Watch request needs a non-zero id") }
            try await core.watch(session: id, requestID: envelope.id, request, outbox: outbox)
            return nil
        case .queue(let request):
            try require(.listQueue, identity)
            let limit = request.limit == 0 ? CoordinatorCore.maximumListedJobs : min(Int(request.limit), CoordinatorCore.maximumListedJobs)
            return .queueList(try await core.queue(limit: limit))
        case .runners:
            try require(.listRunners, identity)
            var list = Heddle_V1_RunnerList()
            list.runners = await core.runnerList()
            return .runnerList(list)
        case .artifactList(let request):
            try require(.listArtifacts, identity)
            var list = Heddle_V1_ArtifactList()
            list.artifacts = try await core.artifacts(runID: request.runID == 0 ? nil : Int64(request.runID))
            return .artifacts(list)
        case .artifactRead(let request):
            try require(.readArtifact, identity)
            return .artifactData(try await core.readArtifact(request))

        case .welcome, .error, .ok, .assignment, .logAck, .artifactDeclared, .artifactCommitted, .stopJob,
             .pipelinePushed, .pipelines, .triggered, .runs, .run, .watchEvent, .queueList, .runnerList,
             .artifacts, .artifactData, .queueEvent, .cancelled, .projects, .revoked:
            throw WireError(.badRequest, "this message is sent by the coordinator, not to it")
        case .none:
            // A message from a newer protocol revision: refused, and the session goes on.
            throw WireError(.unimplemented, "this coordinator (\(HeddleVersion.software)) does not know that message; nothing was done")
        }
    }
}

/// Watches open on one session.
final class WatchCount: Sendable {
    private let count = Mutex(0)

    /// Counts one more; false when the maximum is open already.
    func open() -> Bool {
        count.withLock { count in
            guard count < CoordinatorCore.maximumWatchesPerSession else { return false }
            count += 1
            return true
        }
    }

    func close() { count.withLock { $0 -= 1 } }
}
