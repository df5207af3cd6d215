import Foundation
import Synchronization
import Logging
import Wire

/// Runs one assigned job: a fresh workspace, the node graph in dependency order with
/// independent nodes in parallel, each node's output streamed live, artifacts uploaded after
/// the node succeeds, then the job's result. A failed node fails the job; the nodes that need
/// it (directly or not) are skipped. Everything goes through the `CoordinatorLink`, so a job
/// runs on through a lost connection and its log and result arrive once it is back.
struct JobExecutor {
    let assignment: Heddle_V1_Assignment
    let link: CoordinatorLink
    let spoolDirectory: String
    let workRoot: String
    let baseEnvironment: [String: String]
    /// Where each node runs (`Sandbox`); nil: unisolated.
    let sandbox: Sandbox?
    /// What runs nodes that name a container image (`Podman`); nil: none on this machine.
    let podman: Podman?
    /// Where nodes' resource limits are set (`Cgroups`), and why there is none when nil.
    let cgroups: (Cgroups?, String)
    /// Limits of nodes that set none themselves (`--limits`).
    let defaultLimits: ResourceLimits
    let control: JobControl
    let logger: Logger
    let streams = JobStreams()

    enum Outcome: Sendable {
        case succeeded
        case failed(String)
        case cancelled(String)
    }

    func run() async {
        var logger = self.logger
        logger[metadataKey: "job.id"] = "\(assignment.job.jobID)"
        let workspace = "\(workRoot)/job-\(assignment.job.jobID)-\(assignment.job.epoch)"
        let status: Heddle_V1_Status
        let reason: String
        do {
            try? FileManager.default.removeItem(atPath: workspace)
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: workspace) }
            var commit = ""
            if !assignment.repository.isEmpty {
                commit = try await Checkout.clone(repository: assignment.repository, branch: assignment.branch,
                                                  commit: assignment.commit,
                                                  into: workspace)
                logger.info("checked out", metadata: ["commit": "\(commit)", "branch": "\(assignment.branch)"])
            }
            var started = Heddle_V1_JobStarted()
            started.job = assignment.job
            started.commit = commit
            _ = try? await link.request(.jobStarted(started))
            var cache: (JobCache, JobCache.Restored)?
            if assignment.hasCache {
                let chunk = Int(await link.welcome?.maxArtifactChunkBytes ?? 0)
                let jobCache = JobCache(spec: assignment.cache, link: link, job: assignment.job, workspace: workspace,
                                        archive: "\(workspace).cache.tar", chunkSize: max(16 * 1024, chunk), logger: logger)
                cache = (jobCache, await jobCache.restore())
            }
            switch await runGraph(workspace: workspace, commit: commit, logger: logger) {
            case .succeeded:
                (status, reason) = (.succeeded, "")
                if let (jobCache, restored) = cache, !restored.exact, !control.isAbandoned {
                    await jobCache.save(key: restored.key)
                }
            case .failed(let why): (status, reason) = (.failed, why)
            case .cancelled(let why): (status, reason) = (.cancelled, why)
            }
        } catch let error as Checkout.Failure {
            (status, reason) = (.failed, "checkout of \(assignment.repository) (branch \(assignment.branch)) failed: \(error)")
        } catch {
            (status, reason) = (.failed, "cannot prepare the workspace \(workspace): \(error)")
        }
        if control.isAbandoned {
            logger.warning("job abandoned: its lease is gone", metadata: ["reason": "\(control.cancelReason ?? "")"])
            for stream in streams.all() { await stream.close() }
            await link.unregister(job: JobKey(assignment.job))
            return
        }
        // The result goes only once every log byte is durable at the coordinator.
        for stream in streams.all() { await stream.waitDurable() }
        var finish = Heddle_V1_JobFinish()
        finish.job = assignment.job
        finish.status = status
        finish.reason = reason
        do {
            _ = try await link.request(.jobFinish(finish))
            logger.info("job finished", metadata: ["status": "\(status)", "reason": "\(reason)"])
        } catch {
            logger.error("cannot report the job's result", metadata: ["error": "\(error)"])
        }
        for stream in streams.all() { await stream.close() }
        await link.unregister(job: JobKey(assignment.job))
    }

    private enum NodeState: Equatable {
        case pending, running, succeeded, failed, skipped, cancelled
    }

    private func runGraph(workspace: String, commit: String, logger: Logger) async -> Outcome {
        let nodes = assignment.nodes
        var states = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, NodeState.pending) })
        var firstFailure: String?
        await withTaskGroup(of: (String, NodeState, String?).self) { group in
            var running = 0
            while true {
                // Skip what can never run; start what is ready.
                var changed = true
                while changed {
                    changed = false
                    for node in nodes where states[node.name] == .pending {
                        let needs = node.needs.map { states[$0] ?? .failed }
                        if needs.contains(where: { [.failed, .skipped, .cancelled].contains($0) }) || control.cancelReason != nil {
                            let final: NodeState = control.cancelReason != nil ? .cancelled : .skipped
                            states[node.name] = final
                            changed = true
                            group.addTask { await report(node.name, final == .cancelled ? .cancelled : .skipped, exitCode: nil) ; return (node.name, final, nil) }
                            running += 1
                        } else if needs.allSatisfy({ $0 == .succeeded }) {
                            states[node.name] = .running
                            running += 1
                            group.addTask {
                                let (state, failure) = await runNode(node, workspace: workspace, commit: commit, logger: logger)
                                return (node.name, state, failure)
                            }
                        }
                    }
                }
                guard running > 0, let (name, state, failure) = await group.next() else { break }
                running -= 1
                states[name] = state
                if let failure, firstFailure == nil { firstFailure = failure }
            }
        }
        if let reason = control.cancelReason { return .cancelled(reason) }
        if let firstFailure { return .failed(firstFailure) }
        if states.values.allSatisfy({ $0 == .succeeded }) { return .succeeded }
        return .failed("not every node succeeded")
    }

    private func report(_ node: String, _ status: Heddle_V1_Status, exitCode: Int32?, reason: String = "") async {
        guard !control.isAbandoned else { return }
        var update = Heddle_V1_NodeUpdate()
        update.job = assignment.job
        update.node = node
        update.status = status
        update.exitCode = exitCode ?? 0
        update.exited = exitCode != nil
        update.atMs = Date.nowMilliseconds
        update.reason = reason
        // A node's end after its last log byte, on the same connection.
        let log = status == .running ? nil : streams.all().first { $0.node == node }
        do {
            _ = try await link.request(.nodeUpdate(update), after: log)
        } catch {
            logger.warning("cannot report a node's status", metadata: ["node": "\(node)", "error": "\(error)"])
        }
    }

    /// Runs one node; returns its final state and, when it failed, why.
    private func runNode(_ node: Heddle_V1_NodeSpec, workspace: String, commit: String,
                         logger: Logger) async -> (NodeState, String?) {
        await report(node.name, .running, exitCode: nil)
        var environment = baseEnvironment
        for (key, value) in assignment.env { environment[key] = value }
        for (key, value) in node.env { environment[key] = value }
        for (key, value) in node.secrets { environment[key] = value }
        environment["HEDDLE_NODE"] = node.name
        environment["HEDDLE_WORKSPACE"] = workspace
        environment["HEDDLE_COMMIT"] = commit
        let image = node.image.isEmpty ? nil : node.image
        if image != nil && podman == nil {
            let reason = "node '\(node.name)' runs in image '\(node.image)', and this runner has no podman (Debian: apt-get install podman)"
            await report(node.name, .failed, exitCode: nil, reason: reason)
            return (.failed, reason)
        }
        if node.noNetwork && sandbox == nil && image == nil {
            let reason = "node '\(node.name)' has `network: none`, which needs the sandbox: this runner runs with --isolation none"
            await report(node.name, .failed, exitCode: nil, reason: reason)
            return (.failed, reason)
        }
        let limits = ResourceLimits(memory: node.memoryLimitBytes > 0 ? Int64(clamping: node.memoryLimitBytes) : nil,
                                    cpuMillis: node.cpuLimitMillis > 0 ? Int64(node.cpuLimitMillis) : nil,
                                    pids: node.pidsLimit > 0 ? Int64(node.pidsLimit) : nil).over(defaultLimits)
        // The node's cgroups, named after this runner's process, the job, its lease and the node
        // (unique on the machine).
        let cgroup = "heddle-\(getpid())-\(assignment.job.jobID)-\(assignment.job.epoch)-\(node.name)"
        var joining: [String] = []
        // A container's limits are podman's.
        if !limits.isEmpty && image == nil {
            guard let cgroups = cgroups.0 else {
                let reason = "node '\(node.name)' has resource limits, which need a cgroup this runner can write, and it has none (\(cgroups.1))"
                await report(node.name, .failed, exitCode: nil, reason: reason)
                return (.failed, reason)
            }
            do {
                joining = try cgroups.make(cgroup, limits: limits)
            } catch {
                cgroups.remove(cgroup)
                let reason = "node '\(node.name)' could not start: cannot make its cgroup: \(error)"
                await report(node.name, .failed, exitCode: 127, reason: reason)
                return (.failed, reason)
            }
        }
        defer { if !joining.isEmpty { cgroups.0?.removeWhenEmpty(cgroup) } }
        // In a container, the node's variables (not the runner's) by name, and its marker.
        let container = image.flatMap { image in
            podman.map { podman in
                podman.arguments(name: Podman.name(job: assignment.job, node: node.name), image: image, workspace: workspace,
                                 network: !node.noNetwork, limits: limits,
                                 variables: Array(Set(assignment.env.keys).union(node.env.keys).union(node.secrets.keys)
                                     .union(["HEDDLE_NODE", "HEDDLE_WORKSPACE", "HEDDLE_COMMIT", ProcessTree.variable])),
                                 command: node.run)
            }
        }
        defer { if image != nil { podman?.remove(Podman.name(job: assignment.job, node: node.name)) } }
        let process: NodeProcess
        do {
            process = try NodeProcess(command: node.run, environment: environment, directory: workspace, sandbox: sandbox,
                                      network: !node.noNetwork, cgroups: joining, container: container)
        } catch {
            let reason = "node '\(node.name)' could not start: \(error)"
            await report(node.name, .failed, exitCode: 127, reason: reason)
            return (.failed, reason)
        }
        let grace: Duration = node.killGraceSeconds > 0 ? .seconds(Int(node.killGraceSeconds)) : control.grace
        guard control.track(process, grace: grace) else {
            _ = await drain(process, node: node.name)
            _ = await process.exitCode()
            await report(node.name, .cancelled, exitCode: nil)
            return (.cancelled, nil)
        }
        let timedOut = TimeoutFlag()
        let code: Int32 = await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await drain(process, node: node.name); return nil }
            group.addTask { await process.exitCode() }
            if node.timeoutSeconds > 0 {
                group.addTask {
                    try? await Task.sleep(for: .seconds(Int(node.timeoutSeconds)))
                    if !Task.isCancelled {
                        timedOut.set()
                        process.terminate(grace: grace)
                    }
                    return nil
                }
            }
            var code: Int32 = 0
            var finished = 0
            while let result = await group.next() {
                finished += 1
                if let result { code = result }
                if finished == 2 { group.cancelAll() }
            }
            return code
        }
        control.untrack(process)
        if control.cancelReason != nil {
            await report(node.name, .cancelled, exitCode: code)
            return (.cancelled, nil)
        }
        if timedOut.isSet {
            let reason = "timeout: node '\(node.name)' ran longer than \(node.timeoutSeconds)s"
            await report(node.name, .failed, exitCode: code, reason: reason)
            return (.failed, reason)
        }
        // Podman does not say here whether the kernel killed a container for memory: a
        // container with a memory limit killed by SIGKILL (137) that nobody stopped was.
        let containerOutOfMemory = image != nil && limits.memory != nil && code == 137
        if let memory = limits.memory, containerOutOfMemory || (!joining.isEmpty && cgroups.0?.ranOutOfMemory(cgroup) == true) {
            let reason = "node '\(node.name)' failed: memory limit \(ResourceLimits.size(memory)) exceeded (exit code \(code))"
            await report(node.name, .failed, exitCode: code, reason: reason)
            return (.failed, reason)
        }
        if image != nil && code == 125 {
            let reason = "node '\(node.name)' could not start its container: podman failed (exit code 125; the node's log says why: say, image '\(node.image)' is not on this runner and cannot be pulled)"
            await report(node.name, .failed, exitCode: code, reason: reason)
            return (.failed, reason)
        }
        guard code == 0 else {
            let reason = "node '\(node.name)' failed with exit code \(code)"
            await report(node.name, .failed, exitCode: code, reason: reason)
            return (.failed, reason)
        }
        if !node.artifacts.isEmpty {
            let chunk = Int(await link.welcome?.maxArtifactChunkBytes ?? 0)
            let uploader = ArtifactUploader(link: link, job: assignment.job, workspace: workspace,
                                            chunkSize: max(16 * 1024, chunk))
            let matches = ArtifactUploader.match(node.artifacts, in: workspace)
            if !matches.outside.isEmpty, let stream = streams.all().first(where: { $0.node == node.name }) {
                for (name, resolved) in matches.outside {
                    logger.warning("artifact outside the workspace skipped", metadata: ["name": "\(name)", "resolved": "\(resolved)"])
                    await stream.append(Data("heddle: artifact \(name) skipped: it leads to \(resolved), outside the workspace\n".utf8))
                }
            }
            for name in matches.names {
                do {
                    let id = try await uploader.upload(name: name)
                    logger.info("artifact uploaded", metadata: ["name": "\(name)", "artifact.id": "\(id)"])
                } catch {
                    let reason = "node '\(node.name)': artifact \(name) failed to upload: \(error)"
                    await report(node.name, .failed, exitCode: code, reason: reason)
                    return (.failed, reason)
                }
            }
        }
        await report(node.name, .succeeded, exitCode: code)
        return (.succeeded, nil)
    }

    /// Streams a node's output, byte for byte, through its `LogStream`.
    private func drain(_ process: NodeProcess, node: String) async {
        let stream = LogStream(job: assignment.job, node: node, link: link,
                               spoolPath: "\(spoolDirectory)/\(assignment.job.jobID)-\(assignment.job.epoch)-\(node).spool")
        streams.add(stream)
        await link.register(stream, job: JobKey(assignment.job), node: node)
        // Every node's log of the job is masked with every secret the job was given.
        guard var mask = SecretMask(assignment.nodes.flatMap(\.secrets.values)) else {
            for await data in process.output {
                await stream.append(data)
                process.consumed()
            }
            return
        }
        for await data in process.output {
            let masked = mask.feed(data)
            if !masked.isEmpty { await stream.append(masked) }
            process.consumed()
        }
        let rest = mask.finish()
        if !rest.isEmpty { await stream.append(rest) }
    }
}

/// The log streams of one job's nodes.
final class JobStreams: Sendable {
    private let streams = Mutex<[LogStream]>([])

    func add(_ stream: LogStream) { streams.withLock { $0.append(stream) } }
    func all() -> [LogStream] { streams.withLock { $0 } }
}

/// Set once when a node's timeout fires.
final class TimeoutFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}
