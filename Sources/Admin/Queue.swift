import ArgumentParser
import Foundation
import Wire

struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Jobs running and queued, in dispatch order.")

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let jobs = try await withClient(connection) { try await $0.queue() }
        if json {
            print(Output.json(jobs.map { job -> [String: Any] in
                ["id": job.jobID, "run": job.runID, "pipeline": "\(job.project)/\(job.pipeline)", "job": job.job,
                 "branch": job.branch, "labels": job.labels, "status": Output.statusName(job.status),
                 "runner": job.runner.isEmpty ? NSNull() : job.runner as Any]
            }))
            return
        }
        guard !jobs.isEmpty else {
            print("the queue is empty")
            return
        }
        var position = 0
        print(Output.table(["#", "JOB", "RUN", "PIPELINE", "BRANCH", "LABELS", "STATUS", "WAITING", "RUNNER"], jobs.map { job in
            var place = "-"
            if job.status == .queued {
                position += 1
                place = "\(position)"
            }
            return [place, "\(job.jobID) \(job.job)", "\(job.runID)", "\(job.project)/\(job.pipeline)", job.branch,
                    job.labels.joined(separator: ","), Output.status(job.status),
                    job.status == .queued ? Output.duration(from: job.queuedAtMs, to: 0) : "-",
                    job.runner.isEmpty ? "-" : job.runner]
        }))
    }
}

struct Runners: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connected runners.")

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let runners = try await withClient(connection) { try await $0.runners() }
        if json {
            print(Output.json(runners.map { runner -> [String: Any] in
                ["name": runner.name, "labels": runner.labels, "capacity": runner.capacity, "running": runner.running,
                 "connected_at": Output.iso(runner.connectedAtMs), "last_heartbeat": Output.iso(runner.lastHeartbeatMs),
                 "session": runner.sessionID]
            }))
            return
        }
        guard !runners.isEmpty else {
            print("no runner is connected")
            return
        }
        print(Output.table(["NAME", "LABELS", "RUNNING", "CONNECTED", "LAST HEARTBEAT"], runners.map {
            [$0.name, $0.labels.joined(separator: ","), "\($0.running)/\($0.capacity)", Output.time($0.connectedAtMs),
             Output.time($0.lastHeartbeatMs)]
        }))
    }
}
