import APITypes
import ArgumentParser
import Foundation
import Wire

struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The queue: jobs running and waiting, in dispatch order; reorder it.",
        subcommands: [List.self, Move.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Jobs running and queued, in dispatch order.")

        @Flag(help: "Print JSON.")
        var json = false

        @Flag(help: "Keep showing changes as the coordinator pushes them.")
        var watch = false

        @Option(help: "Show the first N jobs (at most 1000); the total is always shown.")
        var limit: UInt32 = 100

        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be 1 to 1000") }
        }

        func run() async throws {
            try await withClient(connection) { client in
                let list = try await client.queue(limit: limit)
                if !watch {
                    print(json ? Output.json(Operations.ListQueue.Output.Ok.Body.JsonPayload(jobs: list.jobs.map(REST.queueEntry), total: Int(list.total))) : Self.table(list))
                    return
                }
                let events = try await client.watchQueue()
                let live = Output.colour && !json
                if live {
                    Self.redraw(try await client.queue(limit: limit))
                } else if !json {
                    print(Self.table(list))
                }
                for try await event in events {
                    if live {
                        Self.redraw(try await client.queue(limit: limit))
                    } else if json {
                        // One QueueChange per line, as the event stream's `queue` events.
                        if let change = REST.queueChange(event) { print(Output.json(change, pretty: false)) }
                    } else {
                        print(Self.line(event))
                    }
                }
            }
        }

        static func redraw(_ list: Heddle_V1_QueueList) {
            print("\u{1B}[H\u{1B}[2J" + "heddle queue --watch (Ctrl-C to stop)\n\n" + table(list))
        }

        static func line(_ event: Heddle_V1_QueueEvent) -> String {
            let job = event.job
            let what = "job \(job.jobID) (\(job.project)/\(job.pipeline) \(job.job), run \(job.runID))"
            switch event.kind {
            case .queued: return "queued \(what) at position \(job.position)"
            case .moved: return "moved \(what) to position \(job.position)"
            case .claimed: return "claimed \(what) by \(job.runner)"
            case .finished: return "finished \(what): \(Output.statusName(job.status))"
            case .cancelled: return "cancelled \(what)"
            default: return "changed \(what)"
            }
        }

        static func table(_ list: Heddle_V1_QueueList) -> String {
            let jobs = list.jobs
            guard !jobs.isEmpty else { return "the queue is empty" }
            let more = list.total > jobs.count ? "\n… and \(list.total - UInt32(jobs.count)) more (\(list.total) jobs running or queued)" : ""
            return Output.table(["#", "JOB", "RUN", "PIPELINE", "BRANCH", "LABELS", "STATUS", "WAITING", "RUNNER / WHY WAITING"],
                                jobs.map { job in
                [job.position == 0 ? "-" : "\(job.position)", "\(job.jobID) \(job.job)", "\(job.runID)",
                 "\(job.project)/\(job.pipeline)", job.branch, job.labels.isEmpty ? "-" : job.labels.joined(separator: ","),
                 Output.status(job.status),
                 job.status == .queued ? Output.duration(from: job.queuedAtMs, to: 0) : "-",
                 job.status == .running ? job.runner : (job.waitingReason.isEmpty ? "" : Output.paint(job.waitingReason, "33"))]
            }) + more
        }
    }

    struct Move: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a queued job. The order is durable and is the order runners receive jobs.")

        @Argument(help: "The job id (from `heddle queue`).")
        var job: UInt64

        @Flag(help: "To the front of the queue.")
        var top = false

        @Flag(help: "To the back of the queue.")
        var bottom = false

        @Option(help: "Just before this job.")
        var before: UInt64?

        @Option(help: "Just after this job.")
        var after: UInt64?

        @Option(help: "To this place (1 is the front).")
        var position: UInt32?

        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            let chosen = [top, bottom, before != nil, after != nil, position != nil].filter { $0 }.count
            guard chosen == 1 else {
                throw ValidationError("give exactly one of --top, --bottom, --before JOB, --after JOB, --position N")
            }
            if let position, position < 1 { throw ValidationError("--position starts at 1") }
        }

        func run() async throws {
            let target: Heddle_V1_QueueMoveRequest.OneOf_Target
            if top { target = .top(true) }
            else if bottom { target = .bottom(true) }
            else if let before { target = .beforeJob(before) }
            else if let after { target = .afterJob(after) }
            else { target = .position(position ?? 1) }
            let entry = try await withClient(connection) { try await $0.move(job: job, to: target) }
            print("job \(entry.jobID) (\(entry.project)/\(entry.pipeline) \(entry.job)) is now at position \(entry.position)")
        }
    }
}
