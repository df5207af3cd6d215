import Foundation
import Logging
import Synchronization
import NIOCore
import NIOSSL
import Wire

/// One connection of the binary front: Hello first, then each frame decoded, handed to the
/// core with the session the core opened for the peer's certificate, and the answer encoded.
/// The core authorizes and validates; this only translates. Events the core pushes go through
/// an `Outbox` drained by a writer task. Errors are caught here: a bad request gets an Error
/// response, broken framing gets an Error frame and the connection closes; nothing escapes to
/// the server.
struct Session {
    let core: CoordinatorCore
    let logger: Logger
    let heartbeatInterval: TimeAmount

    func run(_ connection: NIOAsyncChannel<Envelope, Envelope>) async {
        var logger = self.logger
        if let remote = connection.channel.remoteAddress { logger[metadataKey: "peer"] = "\(remote)" }
        var opened: UInt64?
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
                let finishes = Finishes()
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
                    /// The session's last frame: no heartbeat and no push follows it.
                    func end(with last: Envelope) {
                        channel.triggerUserOutboundEvent(HeartbeatHandler.Ending(), promise: nil)
                        outbox.finish(with: last)
                    }
                    do {
                        var frames = inbound.makeAsyncIterator()
                        guard let first = try await frames.next() else {
                            outbox.finish()
                            return
                        }
                        let identity = try await PeerIdentity.of(channel: connection.channel)
                        logger[metadataKey: "identity"] = "\(identity)"
                        let principal = Principal(identity)
                        // A refused first frame opens no session.
                        guard case .hello(let hello) = first.body else {
                            throw WireError(.badRequest, "the first frame must be Hello")
                        }
                        if let refusal = HeddleVersion.refusal(major: hello.protocolVersion, minor: hello.protocolMinor,
                                                               software: hello.softwareVersion) {
                            logger.warning("peer refused: its protocol version", metadata: ["reason": "\(refusal)"])
                            end(with: .error(id: first.id, WireError(.unsupportedVersion, refusal)))
                            return
                        }
                        if let refusal = Self.refusal(of: hello) {
                            end(with: .error(id: first.id, refusal))
                            return
                        }
                        let id = try await core.openSession(principal, sink: outbox, close: { channel.close(promise: nil) })
                        opened = id
                        logger[metadataKey: "session"] = "\(id)"
                        outbox.send(Envelope(id: first.id, .welcome(welcome(identity, session: id))))
                        await core.hello(session: id, RunnerHello(hello))
                        logger.debug("session started")
                        while true {
                            // A peer that does not read its answers is not read either.
                            await budget.readable()
                            guard let envelope = try await frames.next() else { break }
                            // A watch lasts until its end: it runs beside the session's
                            // other requests, a bounded number at once.
                            if case .watch = envelope.body {
                                guard watches.open() else {
                                    outbox.send(.error(id: envelope.id, WireError(.resourceExhausted,
                                        "a session may have \(CoordinatorCore.maximumWatchesPerSession) watches open at once")))
                                    continue
                                }
                                group.addTask { [logger] in
                                    await handle(envelope, session: id, principal: principal, outbox: outbox, logger: logger)
                                    watches.close()
                                }
                                continue
                            }
                            // A runner's job ends run beside one another (each waits for
                            // its write to be stored, and ends waiting together share one);
                            // every other frame waits until those read before it are answered.
                            if let job = Finishes.job(of: envelope) {
                                await finishes.start(job)
                                group.addTask { [logger] in
                                    await handle(envelope, session: id, principal: principal, outbox: outbox, logger: logger)
                                    finishes.end(job)
                                }
                                continue
                            }
                            await finishes.drain()
                            let started = ContinuousClock.now
                            await handle(envelope, session: id, principal: principal, outbox: outbox, logger: logger)
                            Self.warnIfSlow(envelope, took: ContinuousClock.now - started, logger: logger)
                        }
                        await finishes.drain()
                    } catch {
                        // The ends read before the failure are answered before its Error frame.
                        await finishes.drain()
                        if let wire = error as? WireError ?? (error as? CoordinatorError).map(WireError.init) {
                            end(with: .error(wire))
                            logger.info("session closed on error", metadata: ["error": "\(wire.message)"])
                        } else if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
                            logger.debug("peer closed without TLS close_notify")
                        } else {
                            let text = String(describing: error)
                            let reason = WireError.tlsReason(text).map { "TLS handshake failed: \($0)" } ?? text
                            logger.info("session closed on error", metadata: ["error": "\(reason)"])
                        }
                    }
                    outbox.finish()
                    budget.close()
                    if let opened { core.endWatches(session: opened) }
                    try await group.waitForAll()
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
        if let opened { await core.sessionClosed(session: opened) }
    }

    /// A frame that held the session for more than a second (its frames wait meanwhile) is
    /// logged with what it was: the store was slow, or a database restarting.
    static func warnIfSlow(_ envelope: Envelope, took: Duration, logger: Logger) {
        guard took > .seconds(1) else { return }
        let kind = envelope.body.flatMap { Mirror(reflecting: $0).children.first?.label } ?? "empty"
        logger.warning("a frame held the session", metadata: ["frame": "\(kind)", "ms": "\(Int(took / .milliseconds(1)))"])
    }

    /// Why a Hello is refused (its labels break the naming rule), or nil. Kept out of `run`,
    /// whose coroutine frame every connection holds for its whole life.
    static func refusal(of hello: Heddle_V1_Hello) -> WireError? {
        do throws(CoordinatorError) {
            try CoordinatorCore.check(RunnerHello(hello))
            return nil
        } catch {
            return WireError(error)
        }
    }

    func welcome(_ identity: PeerIdentity, session: UInt64) -> Heddle_V1_Welcome {
        var welcome = Heddle_V1_Welcome()
        welcome.sessionID = String(session)
        welcome.heartbeatIntervalMs = UInt32(heartbeatInterval.nanoseconds / 1_000_000)
        welcome.maxFrameBytes = UInt32(core.limits.maximumFrameLength)
        welcome.peerName = identity.name
        welcome.role = identity.role.rawValue
        welcome.maxArtifactChunkBytes = UInt32(core.limits.maximumArtifactChunk)
        welcome.softwareVersion = HeddleVersion.software
        welcome.protocolVersion = HeddleVersion.protocolVersion
        welcome.protocolMinor = HeddleVersion.protocolMinor
        return welcome
    }

    /// Handles one frame. Never throws: failures become Error frames.
    func handle(_ envelope: Envelope, session: UInt64, principal: Principal, outbox: Outbox, logger: Logger) async {
        do {
            if let response = try await respond(to: envelope, session: session, principal: principal, outbox: outbox) {
                outbox.send(Envelope(id: envelope.id, response))
            }
        } catch {
            let wire = Self.wire(error)
            if wire.code == .internal { logger.error("request failed", metadata: ["error": "\(error)"]) }
            outbox.send(.error(id: envelope.id, wire))
            if wire.code == .staleEpoch, let job = Self.job(of: envelope) {
                outbox.send(.stopJob(job.jobID, epoch: job.epoch, reason: wire.message, abandon: true))
            }
        }
    }

    /// What the peer is told about an error.
    static func wire(_ error: any Error) -> WireError {
        if let wire = error as? WireError { return wire }
        return WireError(CoordinatorError(error))
    }

    static func job(of envelope: Envelope) -> Heddle_V1_JobRef? {
        switch envelope.body {
        case .jobStarted(let m): m.job
        case .nodeUpdate(let m): m.job
        case .logAppend(let m): m.job
        case .artifactDeclare(let m): m.job
        case .artifactChunk(let m): m.job
        case .artifactCommit(let m): m.job
        case .cacheFind(let m): m.job
        case .cacheRead(let m): m.job
        case .jobFinish(let m): m.job
        default: nil
        }
    }

    /// The response body for a request, or nil for one-way frames.
    ///
    /// Heartbeats, every connection's most frequent frame, are handled here; everything else
    /// in `respondToRequest`, whose coroutine frame (sized for its largest case) a session's
    /// task then keeps: idle connections never allocate it.
    func respond(to envelope: Envelope, session id: UInt64, principal: Principal, outbox: Outbox) async throws -> Envelope.OneOf_Body? {
        if case .heartbeat(let beat) = envelope.body {
            await core.heartbeat(session: id, running: beat.hasRunning ? RunningJobs(beat.running) : nil)
            return nil
        }
        return try await respondToRequest(envelope, session: id, principal: principal, outbox: outbox)
    }

    func respondToRequest(_ envelope: Envelope, session id: UInt64, principal: Principal, outbox: Outbox) async throws -> Envelope.OneOf_Body? {
        if envelope.id == 0 {
            switch envelope.body {
            case .heartbeat, .logAppend, .artifactChunk, nil: break
            default:
                // Its answer could not be told from a push.
                throw WireError(.badRequest, "a request needs a non-zero id; id 0 is for one-way frames (LogAppend, ArtifactChunk, Heartbeat)")
            }
        }
        switch envelope.body {
        case .heartbeat:
            return nil  // handled by `respond`
        case .hello:
            throw WireError(.badRequest, "Hello was already sent on this connection")

        case .nodeUpdate(let update):
            try await core.nodeUpdate(session: id, NodeReport(update))
            return .ok(Heddle_V1_Ok())
        case .logAppend(let append):
            // Acknowledged by the group commit, unless nothing new needs one.
            if let durable = try await core.queueLog(session: id, LogBytes(append)) {
                outbox.send(.logAck(jobID: Int64(clamping: append.job.jobID), epoch: Int64(clamping: append.job.epoch),
                                    node: append.node, durable: durable))
            }
            return nil
        case .artifactDeclare(let declare):
            let grant = try await core.declareArtifact(session: id, ArtifactDeclaration(
                job: LeaseRef(declare.job), name: declare.name, size: declare.size, sha256: declare.sha256))
            var declared = Heddle_V1_ArtifactDeclared()
            declared.uploadID = grant.uploadID
            declared.committedOffset = grant.committedOffset
            return .artifactDeclared(declared)
        case .artifactChunk(let chunk):
            try await core.artifactChunk(session: id, ArtifactBytes(job: LeaseRef(chunk.job), uploadID: chunk.uploadID,
                                                                    offset: chunk.offset, data: chunk.data))
            return nil
        case .artifactCommit(let commit):
            var committed = Heddle_V1_ArtifactCommitted()
            if commit.cacheKey.isEmpty {
                committed.artifactID = UInt64(try await core.commitArtifact(session: id, job: LeaseRef(commit.job),
                                                                            uploadID: commit.uploadID))
            } else {
                committed.artifactID = UInt64(try await core.caches.commit(session: id, job: LeaseRef(commit.job),
                                                                           uploadID: commit.uploadID, key: commit.cacheKey))
            }
            return .artifactCommitted(committed)
        case .cacheFind(let request):
            var found = Heddle_V1_CacheFound()
            if let hit = try await core.caches.find(session: id, job: LeaseRef(request.job), key: request.key,
                                                    restoreKeys: request.restoreKeys) {
                found.found = true
                found.cacheID = UInt64(hit.entry.id)
                found.key = hit.entry.key
                found.size = UInt64(hit.entry.size)
                found.sha256 = hit.entry.sha256
                found.exact = hit.exact
            }
            return .cacheFound(found)
        case .cacheRead(let request):
            var data = Heddle_V1_CacheData()
            data.data = Data(try await core.caches.read(session: id, job: LeaseRef(request.job),
                                                        cacheID: Int64(clamping: request.cacheID), offset: request.offset,
                                                        length: Int(request.length)))
            return .cacheData(data)
        case .jobStarted(let started):
            try await core.jobStarted(session: id, JobStart(job: LeaseRef(started.job), commit: started.commit))
            return .ok(Heddle_V1_Ok())
        case .drainSelf:
            try await core.drainSelf(session: id)
            return .ok(Heddle_V1_Ok())
        case .jobFinish(let finish):
            try await core.jobFinished(session: id, JobResult(job: LeaseRef(finish.job), status: Status(finish.status),
                                                              reason: finish.reason))
            return .ok(Heddle_V1_Ok())

        case .pipelinePush(let push):
            let version = try await core.catalog.pushPipeline(PipelinePush(project: push.project, fileName: push.fileName,
                                                                   source: push.source), as: principal)
            var pushed = Heddle_V1_PipelinePushed()
            pushed.project = version.project
            pushed.pipeline = version.pipeline
            pushed.version = UInt32(version.version)
            return .pipelinePushed(pushed)
        case .pipelineList:
            var list = Heddle_V1_PipelineList()
            list.pipelines = try await core.catalog.pipelines(as: principal).map(\.proto)
            return .pipelines(list)
        case .trigger(let request):
            let triggered = try await core.trigger(TriggerRequest(project: request.project, pipeline: request.pipeline,
                                                                  branch: request.branch, inputs: request.inputs), as: principal)
            return .triggered(Self.triggered(triggered))
        case .runList(let request):
            var list = Heddle_V1_RunList()
            let filter = RunFilter(project: request.project.isEmpty ? nil : request.project,
                                   pipeline: request.pipeline.isEmpty ? nil : request.pipeline,
                                   branch: request.branch.isEmpty ? nil : request.branch,
                                   status: Status(request.status), trigger: request.trigger.isEmpty ? nil : request.trigger)
            list.runs = try await core.catalog.runs(RunQuery(limit: given(request.limit), filter: filter), as: principal).runs.map(\.proto)
            return .runs(list)
        case .rerun(let request):
            return .triggered(Self.triggered(try await core.rerun(runID: Int64(clamping: request.runID),
                                                                  failedOnly: request.failedOnly, as: principal)))
        case .cancel(let request):
            return .cancelled(try await core.cancel(runIDs: request.runIds.map { Int64(clamping: $0) },
                                                    jobIDs: request.jobIds.map { Int64(clamping: $0) }, as: principal).proto)
        case .bulkCancel(let request):
            return .cancelled(try await core.bulkCancel(
                BulkCancelRequest(project: request.project, pipeline: request.pipeline, branch: request.branch,
                                  label: request.label, dryRun: request.dryRun), as: principal).proto)
        case .queueMove(let request):
            var list = Heddle_V1_QueueList()
            list.jobs = [try await core.move(jobID: Int64(clamping: request.jobID), to: MoveTarget(request.target),
                                             as: principal).proto]
            return .queueList(list)
        case .queueWatch:
            guard envelope.id != 0 else { throw WireError(.badRequest, "a QueueWatch request needs a non-zero id") }
            try await core.watchQueue(session: id, requestID: envelope.id)
            return nil
        case .projectCreate(let request):
            let project = try await core.catalog.createProject(name: request.name, repository: request.repository, as: principal)
            return .projects(try await webhook(of: project, rotate: request.webhookSecret, principal: principal))
        case .projectWebhook(let request):
            let project = try await core.catalog.project(request.name, as: principal)
            return .projects(try await webhook(of: project, rotate: request.rotate, principal: principal))
        case .deliveryList(let request):
            var list = Heddle_V1_DeliveryList()
            list.deliveries = try await core.catalog.deliveries(project: request.project, limit: given(request.limit),
                                                        as: principal).map(\.proto)
            return .deliveries(list)
        case .scheduleList(let request):
            var list = Heddle_V1_ScheduleList()
            list.schedules = try await core.schedules.list(project: request.project.isEmpty ? nil : request.project,
                                                           as: principal).map(\.proto)
            return .schedules(list)
        case .cacheList(let request):
            var list = Heddle_V1_CacheList()
            list.caches = try await core.caches.list(project: request.project.isEmpty ? nil : request.project, as: principal).map(\.proto)
            return .caches(list)
        case .cacheDelete(let request):
            var list = Heddle_V1_CacheList()
            list.caches = [try await core.caches.delete(id: Int64(clamping: request.id), as: principal).proto]
            return .caches(list)
        case .projectList:
            var list = Heddle_V1_ProjectList()
            list.projects = try await core.catalog.projects(as: principal).map(\.proto)
            return .projects(list)
        case .revoke(let request):
            var result = Heddle_V1_RevokeResult()
            result.sessionsClosed = UInt32(try await core.revoke(name: request.name, fingerprint: request.fingerprint,
                                                                 as: principal))
            return .revoked(result)
        case .tokenCreate(let request):
            guard let role = Role(rawValue: request.role) else {
                throw WireError(.invalidArgument, "a token's role is viewer, automation or admin, not '\(request.role)'")
            }
            let (token, secret) = try await core.access.createToken(name: request.name, role: role,
                                                             expiresInDays: request.expiresInDays == 0 ? nil : Int(request.expiresInDays),
                                                             as: principal)
            var created = Heddle_V1_TokenCreated()
            created.token = token.proto
            created.secret = secret
            return .tokenCreated(created)
        case .tokenList:
            var list = Heddle_V1_TokenList()
            list.tokens = try core.access.tokenList(as: principal).map(\.proto)
            return .tokens(list)
        case .tokenRevoke(let request):
            var list = Heddle_V1_TokenList()
            list.tokens = [try await core.access.revokeToken(name: request.name, as: principal).proto]
            return .tokens(list)
        case .runnerDrain(let request):
            var list = Heddle_V1_RunnerList()
            list.runners = try await core.setDrained(runner: request.name, request.drained, as: principal).map(\.proto)
            return .runnerList(list)
        case .runGet(let request):
            return .run(try await core.catalog.runDetail(runID: Int64(clamping: request.runID),
                                                 attempt: request.attempt == 0 ? nil : Int(request.attempt),
                                                 as: principal).proto)
        case .watch(let request):
            guard envelope.id != 0 else { throw WireError(.badRequest, "a Watch request needs a non-zero id") }
            try await core.watch(session: id, requestID: envelope.id, WatchRequest(request))
            return nil
        case .queue(let request):
            return .queueList(try await core.queue(limit: given(request.limit), most: ListLimit.maximumQueueInOneFrame, as: principal).proto)
        case .runners:
            var list = Heddle_V1_RunnerList()
            list.runners = try await core.runners(as: principal).map(\.proto)
            return .runnerList(list)
        case .artifactList(let request):
            var list = Heddle_V1_ArtifactList()
            list.artifacts = try await core.catalog.artifacts(runID: request.runID == 0 ? nil : Int64(clamping: request.runID),
                                                      as: principal).map(\.proto)
            return .artifacts(list)
        case .artifactSearch(let request):
            guard let sort = request.sort.isEmpty ? .newest : ArtifactQuery.Sort(rawValue: request.sort) else {
                throw WireError(.invalidArgument, "sort is one of \(ArtifactQuery.Sort.allCases.map(\.rawValue).joined(separator: ", ")), not '\(request.sort)'")
            }
            let query = ArtifactQuery(
                name: given(request.name), project: given(request.project), pipeline: given(request.pipeline),
                branch: given(request.branch), runID: request.runID == 0 ? nil : Int64(clamping: request.runID),
                sha256Prefix: given(request.sha256Prefix),
                minimumSize: request.hasSize ? Int64(clamping: request.size.min) : nil,
                maximumSize: request.hasSize ? Int64(clamping: request.size.max) : nil,
                createdAfter: request.createdAfterMs == 0 ? nil : request.createdAfterMs,
                createdBefore: request.createdBeforeMs == 0 ? nil : request.createdBeforeMs,
                sort: sort, limit: given(request.limit), offset: Int(request.offset))
            let (artifacts, more) = try await core.catalog.searchArtifacts(query, as: principal)
            var list = Heddle_V1_ArtifactList()
            list.artifacts = artifacts.map(\.proto)
            list.more = more
            return .artifacts(list)
        case .artifactRead(let request):
            let slice = try await core.catalog.readArtifact(ArtifactRead(artifactID: Int64(clamping: request.artifactID),
                                                                 offset: Int64(clamping: request.offset),
                                                                 length: request.length == 0 ? nil : Int(request.length)),
                                                    as: principal)
            var data = Heddle_V1_ArtifactData()
            data.artifact = slice.artifact.proto
            data.offset = UInt64(slice.offset)
            data.data = slice.data
            return .artifactData(data)
        case .secretSet(let request):
            guard let value = String(bytes: request.value, encoding: .utf8) else {
                throw WireError(.invalidArgument, "a secret's value must be UTF-8 text (it becomes an environment variable)")
            }
            return .secrets(try await core.secrets.set(project: request.project, name: request.name, value: value,
                                                       as: principal).proto)
        case .secretList(let request):
            return .secrets(try await core.secrets.list(project: request.project, as: principal).proto)
        case .secretDelete(let request):
            return .secrets(try await core.secrets.delete(project: request.project, name: request.name, as: principal).proto)
        case .secretForks(let request):
            return .secrets(try await core.secrets.setForks(project: request.project, allowed: request.allowed,
                                                            as: principal).proto)

        case .welcome, .error, .ok, .assignment, .logAck, .artifactDeclared, .artifactCommitted, .stopJob,
             .pipelinePushed, .pipelines, .triggered, .runs, .run, .watchEvent, .queueList, .runnerList,
             .artifacts, .artifactData, .queueEvent, .cancelled, .projects, .revoked, .tokenCreated, .tokens, .deliveries, .schedules, .cacheFound, .cacheData, .caches,
             .secrets:
            throw WireError(.badRequest, "this message is sent by the coordinator, not to it")
        case .none:
            // A message from a newer protocol revision: refused, and the session goes on.
            throw WireError(.unimplemented, "this coordinator (\(HeddleVersion.software)) does not know that message; nothing was done")
        }
    }

    /// A project with its webhook URL; with `rotate`, a new secret in it (shown once).
    func webhook(of record: ProjectRecord, rotate: Bool, principal: Principal) async throws -> Heddle_V1_ProjectList {
        var project = record.proto
        if rotate {
            project.webhookSecret = try await core.catalog.rotateWebhookSecret(project: record.name, as: principal)
            project.webhookEnabled = true
        }
        project.webhookURL = project.webhookEnabled ? core.webhooks.url(project: project.name) ?? "" : ""
        var list = Heddle_V1_ProjectList()
        list.projects = [project]
        return list
    }

    static func triggered(_ triggered: Triggered) -> Heddle_V1_Triggered {
        var out = Heddle_V1_Triggered()
        out.runID = UInt64(triggered.runID)
        out.attempt = UInt32(triggered.attempt)
        return out
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

/// The `JobFinish` frames of one session being handled beside one another (`Session.run`): a
/// runner whose jobs end together waits for their ends to be stored at once, not one after the
/// other (their writes share a transaction), while every ordering the protocol promises holds.
/// A `JobFinish` is the last frame about its job, so one read after the job's other frames
/// (handled one at a time, in order) needs none of them; any frame but another job's
/// `JobFinish` waits until those read before it are answered (`drain`), so it sees them done;
/// a second `JobFinish` of a job whose first is still being handled waits for it, as before.
/// At most `maximum` at once, each of at most `maximumReason` bytes of reason: what the session
/// holds stays bounded.
final class Finishes: Sendable {
    static let maximum = 64
    static let maximumReason = 4096

    private struct State {
        var running: Set<UInt64> = []
        /// The session's loop, waiting for room, for none running, or for a job's end.
        var waiter: (until: Wait, continuation: CheckedContinuation<Void, Never>)?
    }

    private enum Wait {
        case room
        case none
    }

    private let state = Mutex(State())

    /// The job of a frame that may run beside the others (a `JobFinish` with a short reason),
    /// or nil.
    static func job(of envelope: Envelope) -> UInt64? {
        guard case .jobFinish(let finish) = envelope.body, envelope.id != 0,
              finish.reason.utf8.count <= maximumReason else { return nil }
        return finish.job.jobID
    }

    /// Counts `job`'s end as running, once there is room for it and no end of the same job
    /// runs (the session's loop only, before it starts the frame).
    func start(_ job: UInt64) async {
        while true {
            let wait: Wait? = state.withLock { state in
                if state.running.contains(job) { return Wait.none }
                guard state.running.count < Self.maximum else { return .room }
                state.running.insert(job)
                return nil
            }
            guard let wait else { return }
            await waitUntil(wait)
        }
    }

    /// Returns once no end runs (the session's loop only).
    func drain() async {
        await waitUntil(.none)
    }

    private func waitUntil(_ wait: Wait) async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.running.isEmpty || (wait == .room && state.running.count < Self.maximum) { return true }
                state.waiter = (wait, continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Whether the session's loop waits (for tests).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// A job's end was answered.
    func end(_ job: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.running.remove(job)
            guard let waiter = state.waiter else { return nil }
            switch waiter.until {
            case .none where !state.running.isEmpty: return nil
            default:
                state.waiter = nil
                return waiter.continuation
            }
        }
        waiter?.resume()
    }
}
