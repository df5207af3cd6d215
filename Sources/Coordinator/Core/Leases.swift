/// Which runner holds which job, under which epoch, until when: the lease state machine.
///
/// A plain value: its methods decide and return what to do, and the core does the I/O (store
/// writes, frames). The store holds the same facts (a job's runner and epoch are columns, and
/// every runner write is fenced by epoch there); this is the coordinator's working copy.
///
/// A lease is attached to a session while its runner is connected. When the session ends the
/// lease waits until a deadline for the runner to come back with the job (`connect`); past
/// it the job is lost (`expired`). Every claim takes a new epoch, greater than any before.
struct Leases {
    struct Lease {
        var runID: Int64
        var attempt: Int
        var name: String
        /// The session running it; nil while its runner is away (until `deadline`).
        var session: UInt64?
        var runner: String
        var epoch: Int64
        var deadline: ContinuousClock.Instant?
        /// Set once a stop was decided (a cancel); a runner that reattaches gets it again.
        var cancelReason: String?
        /// The job's nodes and their statuses, in the pipeline's order (nil until loaded).
        var nodes: [(name: String, status: Status)]?
        /// Its runner reported the job's end, which is being stored: a heartbeat that no
        /// longer lists the job is not a lost job.
        var finishing = false
    }

    private(set) var jobs: [Int64: Lease] = [:]
    /// The last epoch handed out.
    private(set) var lastEpoch: Int64

    /// Epochs start above `lastEpoch` (the clock in milliseconds at start, so a restarted
    /// coordinator never reuses one).
    init(lastEpoch: Int64) {
        self.lastEpoch = lastEpoch
    }

    subscript(jobID: Int64) -> Lease? { jobs[jobID] }

    var isEmpty: Bool { jobs.isEmpty }
    var jobIDs: [Int64] { jobs.keys.sorted() }

    /// A job that was running when the coordinator stopped: its runner has until `deadline`
    /// to come back with it.
    mutating func restore(job: JobRecord, deadline: ContinuousClock.Instant) {
        jobs[job.id] = Lease(runID: job.runID, attempt: job.attempt, name: job.name, session: nil,
                             runner: job.runner ?? "", epoch: job.epoch, deadline: deadline)
        lastEpoch = max(lastEpoch, job.epoch)
    }

    /// The scheduler placed a job on a session: a new lease with a new epoch, greater than any
    /// before and not below the clock in milliseconds (`now`), so that the epochs of several
    /// coordinators of a cluster keep in step and a runner moving between them is never given
    /// an epoch below one it has seen.
    mutating func claim(jobID: Int64, session: UInt64, runner: String, now: Int64 = 0) -> Int64 {
        lastEpoch = max(lastEpoch + 1, now)
        jobs[jobID] = Lease(runID: 0, attempt: 0, name: "", session: session, runner: runner, epoch: lastEpoch)
        return lastEpoch
    }

    /// The store recorded the claim: what the lease is about.
    mutating func claimed(jobID: Int64, runID: Int64, attempt: Int, name: String, nodes: [(name: String, status: Status)]) {
        jobs[jobID]?.runID = runID
        jobs[jobID]?.attempt = attempt
        jobs[jobID]?.name = name
        jobs[jobID]?.nodes = nodes
    }

    /// The runner reported the job's end under `epoch`, or that report failed (`false`).
    mutating func finishing(jobID: Int64, epoch: Int64, _ finishing: Bool) {
        guard jobs[jobID]?.epoch == epoch else { return }
        jobs[jobID]?.finishing = finishing
    }

    /// A runner says it was given epochs through `epoch` (by this coordinator or another of a
    /// cluster): later claims go above it.
    mutating func seen(epoch: Int64) {
        lastEpoch = max(lastEpoch, epoch)
    }

    /// The lease ends (the job finished, was lost, or its claim was not stored).
    mutating func end(jobID: Int64) -> Lease? {
        jobs.removeValue(forKey: jobID)
    }

    enum ConnectAction: Equatable {
        /// The job moves to the new session (it was on `from`, a session not yet seen closed).
        case reattach(jobID: Int64, from: UInt64?)
        /// Tell the runner to stop the job (a cancel decided while it was away).
        case stop(jobID: Int64, epoch: Int64, reason: String)
        /// The runner's lease with this epoch is gone: it drops that assignment, reporting
        /// nothing more about it.
        case abandon(jobID: Int64, epoch: Int64, reason: String)
        /// The runner held this job and came back without it.
        case lost(jobID: Int64, why: String)
    }

    /// A runner's session starts listing the jobs it still runs: those it holds the current
    /// lease of move to the session; the others it must abandon; jobs leased to it that it
    /// did not list, held by no session, are lost.
    mutating func connect(runner: String, session: UInt64, running: [LeaseRef]) -> [ConnectAction] {
        var actions: [ConnectAction] = []
        var listed = Set<Int64>()
        for ref in running {
            listed.insert(ref.jobID)
            seen(epoch: ref.epoch)
            if var lease = jobs[ref.jobID], lease.runner == runner, lease.epoch == ref.epoch {
                let from = lease.session.flatMap { $0 == session ? nil : $0 }
                lease.session = session
                lease.deadline = nil
                jobs[ref.jobID] = lease
                actions.append(.reattach(jobID: ref.jobID, from: from))
                if let reason = lease.cancelReason { actions.append(.stop(jobID: ref.jobID, epoch: ref.epoch, reason: reason)) }
            } else {
                actions.append(.abandon(jobID: ref.jobID, epoch: ref.epoch,
                                        reason: "the lease of job \(ref.jobID) (epoch \(ref.epoch)) is no longer this runner's"))
            }
        }
        let forgotten = jobs.filter { $0.value.runner == runner && $0.value.session == nil && !listed.contains($0.key) }
        for id in forgotten.keys.sorted() {
            actions.append(.lost(jobID: id, why: "runner lost: \(runner) came back without the job"))
        }
        return actions
    }

    /// A session ended: the jobs it held wait for their runner until `deadline`.
    mutating func disconnect(session: UInt64, jobs ids: Set<Int64>, deadline: ContinuousClock.Instant) {
        for id in ids where jobs[id]?.session == session {
            jobs[id]?.session = nil
            jobs[id]?.deadline = deadline
        }
    }

    /// Jobs whose runner stayed away past the deadline, with why they are lost, by id.
    func expired(at now: ContinuousClock.Instant) -> [(jobID: Int64, why: String)] {
        jobs.filter { $0.value.session == nil && ($0.value.deadline.map { $0 <= now } ?? false) }
            .sorted { $0.key < $1.key }
            .map { ($0.key, "runner lost: \($0.value.runner) was silent for longer than its lease") }
    }

    /// A runner's heartbeat on `session` lists the jobs it runs (`running`) and the greatest
    /// epoch it was assigned (`through`). Jobs leased to that session under an epoch it has
    /// received that it does not list are no longer run (an assignment it lost, a stop that
    /// hit the wrong one): with why, by id. Later assignments are not judged yet.
    func notRunning(session: UInt64, running: Set<LeaseRef>, through: Int64) -> [(jobID: Int64, why: String)] {
        jobs.filter { $0.value.session == session && $0.value.epoch <= through && !$0.value.finishing
            && !running.contains(LeaseRef(jobID: $0.key, epoch: $0.value.epoch)) }
            .sorted { $0.key < $1.key }
            .map { ($0.key, "runner lost: \($0.value.runner) no longer runs the job") }
    }

    /// The lease a write about a job comes under: only the session attached to the job's
    /// current lease, with its epoch, may write.
    func check(_ ref: LeaseRef, session: UInt64) throws(CoordinatorError) -> Lease {
        guard let lease = jobs[ref.jobID] else {
            throw CoordinatorError(.failedPrecondition, "job \(ref.jobID) is not running on this runner")
        }
        guard lease.epoch == ref.epoch else {
            throw CoordinatorError(.staleLease, "job \(ref.jobID): lease epoch \(ref.epoch) is no longer current; stop it")
        }
        guard lease.session == session else {
            throw CoordinatorError(.permissionDenied, "job \(ref.jobID) is not attached to this session")
        }
        return lease
    }

    enum CancelAction: Equatable {
        /// Tell the session to stop the job now.
        case stop(session: UInt64)
        /// Its runner is away: it gets the stop when it reattaches the job.
        case stopOnReattach
    }

    /// A cancel of a leased job: decided once; nil when the job is not leased or a stop was
    /// decided already.
    mutating func cancel(jobID: Int64, reason: String) -> CancelAction? {
        guard var lease = jobs[jobID], lease.cancelReason == nil else { return nil }
        lease.cancelReason = reason
        jobs[jobID] = lease
        return lease.session.map { .stop(session: $0) } ?? .stopOnReattach
    }

    /// Records a node's new status (known nodes only).
    mutating func setNode(_ node: String, of jobID: Int64, to status: Status) {
        guard let index = jobs[jobID]?.nodes?.firstIndex(where: { $0.name == node }) else { return }
        jobs[jobID]?.nodes?[index].status = status
    }

    /// Sets a job's nodes once (after a restart, read from the store on first need).
    mutating func loadNodes(_ nodes: [(name: String, status: Status)], of jobID: Int64) {
        if jobs[jobID] != nil && jobs[jobID]?.nodes == nil { jobs[jobID]?.nodes = nodes }
    }
}
