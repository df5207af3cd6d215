/// Every job this coordinator handles past the queue, each in exactly one phase: the job
/// state machine.
///
/// A plain value: its `mutating` transitions decide and return what to do, and the core does
/// the I/O (store writes, frames, events). A job enters the table when the scheduler places
/// it (or when it is restored, taken over or adopted) and leaves it only once the store has
/// settled where it went: its end stored, its return to the queue stored, or its claim refused.
/// While a store write is on its way the job stays here in an in-between phase, so a command
/// that arrives meanwhile (a cancel) finds it, is recorded, and is applied when the phase
/// settles: nothing is decided on a job that is in no table.
///
/// ```
///            claim                 claimSettled                 beginEnd / lose
///  (queue) ────────► claiming ───────────────────► leased ───────────────────────► finishing ──► (gone)
///    ▲                  │ claimFailed / not claimed  │ lose (retry left)                 ▲
///    └──────────────────┘                            ▼                                   │
///    └──────────────────────────────────────────  requeueing ───(a cancel recorded)──────┘
/// ```
///
/// The store holds the same facts (a job's runner and epoch are columns, and every runner
/// write is fenced by epoch there); this is the coordinator's working copy. A job is attached
/// to a session while its runner is connected; when the session ends it waits until a
/// deadline for the runner to come back with it (`connect`), and past it the job is lost.
/// Every claim takes a new epoch, greater than any before.
struct JobTable {
    enum Phase: String, Equatable, Sendable {
        /// Placed on a runner; its claim is being stored. The runner has not been told.
        case claiming
        /// Held by its runner (or waiting for it to come back, until `deadline`).
        case leased
        /// Its end (`end`) is decided and being stored.
        case finishing
        /// Lost, and going back to the queue.
        case requeueing
    }

    /// A job's end, as decided.
    struct End: Equatable, Sendable {
        var status: Status
        var reason: String
        /// Written fenced by the lease's epoch; false for a claim that may not be stored.
        var fenced = true
        /// Reported by the runner (`JobFinish`): a write that fails is answered `UNAVAILABLE`
        /// and the runner sends it again. Otherwise the coordinator decided it and tries again
        /// itself (`unsettled`) until the store takes it.
        var reported = false
    }

    struct Job {
        var phase: Phase
        var runID: Int64
        var attempt: Int
        var name: String
        /// The session running it; nil while its runner is away (until `deadline`).
        var session: UInt64?
        var runner: String
        var epoch: Int64
        var deadline: ContinuousClock.Instant?
        /// Set once a stop was decided (a cancel); a runner that reattaches gets it again, and
        /// a job between phases ends cancelled when its phase settles.
        var cancelReason: String?
        /// The job's nodes and their statuses, in the pipeline's order (nil until loaded).
        var nodes: [(name: String, status: Status)]?
        /// How often it may go back to the queue when its runner is lost, and how often it did.
        var retryLost = 0
        var lostCount = 0
        /// While `claiming`: its place in the queue, should the claim fail.
        var queued: Scheduler.QueuedJob?
        /// While `finishing`: the end being stored.
        var end: End?
        /// While `requeueing`: why it was lost, and whether the store has it queued already.
        var lostBecause = ""
        var requeued = false
        /// A store write for its current transition is on its way.
        var writing = false
    }

    private(set) var jobs: [Int64: Job] = [:]
    /// The last epoch handed out.
    private(set) var lastEpoch: Int64

    /// Epochs start above `lastEpoch` (the clock in milliseconds at start, so a restarted
    /// coordinator never reuses one).
    init(lastEpoch: Int64) {
        self.lastEpoch = lastEpoch
    }

    subscript(jobID: Int64) -> Job? { jobs[jobID] }

    var isEmpty: Bool { jobs.isEmpty }
    var count: Int { jobs.count }
    var jobIDs: [Int64] { jobs.keys.sorted() }

    // MARK: entering

    /// A job that was running when the coordinator stopped (or that this coordinator took
    /// over): its runner has until `deadline` to come back with it.
    mutating func restore(job: JobRecord, deadline: ContinuousClock.Instant) {
        jobs[job.id] = Job(phase: .leased, runID: job.runID, attempt: job.attempt, name: job.name, session: nil,
                           runner: job.runner ?? "", epoch: job.epoch, deadline: deadline,
                           retryLost: job.retryLost, lostCount: job.lostCount)
        lastEpoch = max(lastEpoch, job.epoch)
    }

    /// The scheduler placed a queued job on a session: `claiming`, with a new epoch, greater
    /// than any before and not below the clock in milliseconds (`now`), so that the epochs of
    /// several coordinators of a cluster keep in step and a runner moving between them is
    /// never given an epoch below one it has seen.
    mutating func claim(_ queued: Scheduler.QueuedJob, session: UInt64, runner: String, now: Int64 = 0) -> Int64 {
        lastEpoch = max(lastEpoch + 1, now)
        jobs[queued.id] = Job(phase: .claiming, runID: 0, attempt: 0, name: "", session: session, runner: runner,
                              epoch: lastEpoch, queued: queued)
        return lastEpoch
    }

    /// New epochs for claims the store decides (the database is the queue): ascending, each
    /// greater than any before and not below the clock in milliseconds (see `claim`).
    mutating func newEpochs(_ count: Int, now: Int64) -> [Int64] {
        (0..<count).map { _ in
            lastEpoch = max(lastEpoch + 1, now)
            return lastEpoch
        }
    }

    /// A job the store claimed for a runner (the database is the queue): `leased` at once,
    /// to `session` (nil when its runner left while the claim was stored: it has until
    /// `deadline` to come back). A cancel recorded while the claim was on its way
    /// (`cancelReason`) ends it cancelled before the runner is told.
    mutating func claimed(_ record: ClaimedJob, session: UInt64?, deadline: ContinuousClock.Instant,
                          cancelReason: String?) -> ClaimOutcome {
        var job = Job(phase: .leased, runID: record.run.id, attempt: record.job.attempt, name: record.job.name,
                      session: session, runner: record.job.runner ?? "", epoch: record.job.epoch,
                      deadline: session == nil ? deadline : nil, nodes: record.nodes.map { ($0.name, $0.status) },
                      retryLost: record.job.retryLost, lostCount: record.job.lostCount)
        job.cancelReason = cancelReason
        jobs[record.job.id] = job
        lastEpoch = max(lastEpoch, record.job.epoch)
        if let reason = cancelReason {
            _ = beginEnd(record.job.id, End(status: .cancelled, reason: "\(reason) (before it started)"))
            return .cancelled(reason: reason, session: session)
        }
        return session.map { .assign(session: $0) } ?? .runnerAway
    }

    enum ClaimOutcome: Equatable {
        /// Send the assignment to this session.
        case assign(session: UInt64)
        /// Its runner left while the claim was stored: the lease runs out unless it comes back.
        case runnerAway
        /// A cancel came while the claim was stored: the runner is never told; the job ends
        /// cancelled (it is `finishing` now).
        case cancelled(reason: String, session: UInt64?)
        /// The store no longer had it queued (claimed elsewhere, cancelled): it left the table;
        /// its runner's slot (`session`) is free.
        case notClaimed(session: UInt64?)
        /// Not this claim's job any more.
        case stale
    }

    /// The store answered a claim: with the job's record, or nil when it was no longer queued.
    mutating func claimSettled(_ jobID: Int64, epoch: Int64, record: ClaimedJob?) -> ClaimOutcome {
        guard var job = jobs[jobID], job.epoch == epoch, job.phase == .claiming else { return .stale }
        guard let record else {
            jobs[jobID] = nil
            return .notClaimed(session: job.session)
        }
        job.runID = record.run.id
        job.attempt = record.job.attempt
        job.name = record.job.name
        job.nodes = record.nodes.map { ($0.name, $0.status) }
        job.retryLost = record.job.retryLost
        job.lostCount = record.job.lostCount
        job.queued = nil
        job.phase = .leased
        jobs[jobID] = job
        if let reason = job.cancelReason {
            _ = beginEnd(jobID, End(status: .cancelled, reason: "\(reason) (before it started)"))
            return .cancelled(reason: reason, session: job.session)
        }
        return job.session.map { .assign(session: $0) } ?? .runnerAway
    }

    /// The claim could not be stored (the store failed): the job leaves the table and goes
    /// back to the queue where it was (`queued`), unless a cancel came meanwhile
    /// (`cancelReason`): then it is cancelled where it is queued, in the store.
    mutating func claimFailed(_ jobID: Int64, epoch: Int64) -> (session: UInt64?, queued: Scheduler.QueuedJob, cancelReason: String?)? {
        guard let job = jobs[jobID], job.epoch == epoch, job.phase == .claiming, let queued = job.queued else { return nil }
        jobs[jobID] = nil
        return (job.session, queued, job.cancelReason)
    }

    // MARK: leaving

    /// Decides a job's end: `finishing`, unless an end is being stored already. Returns
    /// whether the end was taken (false: the job is gone or finishing already).
    @discardableResult
    mutating func beginEnd(_ jobID: Int64, _ end: End) -> Bool {
        guard var job = jobs[jobID], job.phase != .finishing || (job.end?.reported == true && end.reported && !job.writing)
        else { return false }
        job.phase = .finishing
        job.end = end
        jobs[jobID] = job
        return true
    }

    enum LossOutcome: Equatable {
        /// Store the end it now has (`finishing`).
        case end
        /// Put it back in the queue (`requeueing`).
        case requeue
    }

    /// Its runner lost the job (it stayed away past the lease, came back without it, or no
    /// longer lists it). A job with a cancel decided ends cancelled; one its runner reported
    /// the end of keeps that end (the coordinator stores it now); one with retries left goes
    /// back to the queue; any other fails with `why`. The runner's slot it held (`freed`) is
    /// free. Nil when the job is not leased here (between phases already, or gone).
    mutating func lose(_ jobID: Int64, why: String) -> (outcome: LossOutcome, freed: UInt64?)? {
        guard var job = jobs[jobID] else { return nil }
        let freed = job.session
        switch job.phase {
        case .claiming, .requeueing:
            return nil
        case .finishing:
            // Only an end its runner reported and could not get stored: the coordinator keeps it.
            guard var end = job.end, end.reported, !job.writing else { return nil }
            end.reported = false
            job.end = end
            job.session = nil
            jobs[jobID] = job
            return (.end, freed)
        case .leased:
            job.session = nil
            jobs[jobID] = job
            if let reason = job.cancelReason {
                beginEnd(jobID, End(status: .cancelled, reason: "\(reason) (\(why) before it confirmed)"))
                return (.end, freed)
            }
            if job.lostCount < job.retryLost {
                job.phase = .requeueing
                job.lostBecause = why
                jobs[jobID] = job
                return (.requeue, freed)
            }
            beginEnd(jobID, End(status: .failed, reason: why))
            return (.end, freed)
        }
    }

    /// The end a runner reported, completed (corrected from its nodes) while the job was
    /// `finishing`; ready to be written.
    mutating func completeEnd(_ jobID: Int64, _ end: End) {
        guard jobs[jobID]?.phase == .finishing else { return }
        jobs[jobID]?.end = end
        jobs[jobID]?.writing = false
    }

    /// The job no longer counts against its session (its slot was freed: an end the
    /// coordinator decided, of a job its runner is not running).
    mutating func detach(_ jobID: Int64) {
        jobs[jobID]?.session = nil
    }

    /// A write of the job's transition starts (`true`), or failed (`false`: `unsettled` has it
    /// again, or its runner sends its end again).
    mutating func writing(_ jobID: Int64, _ writing: Bool) {
        jobs[jobID]?.writing = writing
    }

    /// The store has the requeued job queued; what is left is to queue it here (or cancel it).
    mutating func requeueStored(_ jobID: Int64) {
        guard jobs[jobID]?.phase == .requeueing else { return }
        jobs[jobID]?.requeued = true
    }

    /// The store settled the job's last transition: it leaves the table.
    mutating func settled(_ jobID: Int64) -> Job? {
        jobs.removeValue(forKey: jobID)
    }

    /// A return to the queue is settled: the job leaves the table, unless a claim from the
    /// store took it again meanwhile (several coordinators: the job was claimable as soon as
    /// the store had it queued), which replaced its entry.
    mutating func requeueSettled(_ jobID: Int64) {
        if jobs[jobID]?.phase == .requeueing { jobs[jobID] = nil }
    }

    /// A write of a return to the queue failed: tried again later, unless a claim took it.
    mutating func requeueFailed(_ jobID: Int64) {
        if jobs[jobID]?.phase == .requeueing { jobs[jobID]?.writing = false }
    }

    /// Jobs whose transition the coordinator decided and the store has not taken yet (no
    /// write on its way): to be written again. An end its runner reported is the runner's to
    /// send again.
    var unsettled: [Int64] {
        jobs.filter { id, job in
            !job.writing && (job.phase == .requeueing || job.phase == .finishing && job.end?.reported == false)
        }.keys.sorted()
    }

    // MARK: runners

    /// A runner says it was given epochs through `epoch` (by this coordinator or another of a
    /// cluster): later claims go above it.
    mutating func seen(epoch: Int64) {
        lastEpoch = max(lastEpoch, epoch)
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

    /// Whether the runner of a job in this phase may still write about it.
    private static func held(_ job: Job) -> Bool {
        job.phase == .leased || (job.phase == .finishing && job.end?.reported == true)
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
            if var job = jobs[ref.jobID], job.runner == runner, job.epoch == ref.epoch, Self.held(job) {
                let from = job.session.flatMap { $0 == session ? nil : $0 }
                job.session = session
                job.deadline = nil
                jobs[ref.jobID] = job
                actions.append(.reattach(jobID: ref.jobID, from: from))
                if let reason = job.cancelReason, job.phase == .leased {
                    actions.append(.stop(jobID: ref.jobID, epoch: ref.epoch, reason: reason))
                }
            } else {
                actions.append(.abandon(jobID: ref.jobID, epoch: ref.epoch,
                                        reason: "the lease of job \(ref.jobID) (epoch \(ref.epoch)) is no longer this runner's"))
            }
        }
        let forgotten = jobs.filter {
            $0.value.runner == runner && $0.value.session == nil && Self.held($0.value) && !listed.contains($0.key)
        }
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
        jobs.filter { $0.value.session == nil && Self.held($0.value) && ($0.value.deadline.map { $0 <= now } ?? false) }
            .sorted { $0.key < $1.key }
            .map { ($0.key, "runner lost: \($0.value.runner) was silent for longer than its lease") }
    }

    /// A runner's heartbeat on `session` lists the jobs it runs (`running`) and the greatest
    /// epoch it was assigned (`through`). Jobs leased to that session under an epoch it has
    /// received that it does not list are no longer run (an assignment it lost, a stop that
    /// hit the wrong one): with why, by id. Later assignments are not judged yet, nor a job
    /// whose end its runner reported.
    func notRunning(session: UInt64, running: Set<LeaseRef>, through: Int64) -> [(jobID: Int64, why: String)] {
        jobs.filter { $0.value.session == session && $0.value.phase == .leased && $0.value.epoch <= through
            && !running.contains(LeaseRef(jobID: $0.key, epoch: $0.value.epoch)) }
            .sorted { $0.key < $1.key }
            .map { ($0.key, "runner lost: \($0.value.runner) no longer runs the job") }
    }

    /// The job a write about it comes under: only the session attached to the job's current
    /// lease, with its epoch, may write, and only while the job is leased (`finishing`: also
    /// its end reported again).
    func check(_ ref: LeaseRef, session: UInt64, finishing: Bool = false) throws(CoordinatorError) -> Job {
        guard let job = jobs[ref.jobID], job.phase != .claiming else {
            throw CoordinatorError(.failedPrecondition, "job \(ref.jobID) is not running on this runner")
        }
        guard job.epoch == ref.epoch else {
            throw CoordinatorError(.staleLease, "job \(ref.jobID): lease epoch \(ref.epoch) is no longer current; stop it")
        }
        guard job.phase == .leased || (finishing && Self.held(job)) else {
            throw CoordinatorError(.failedPrecondition, "job \(ref.jobID) is no longer running: it is \(job.phase.rawValue)")
        }
        guard job.session == session else {
            throw CoordinatorError(.permissionDenied, "job \(ref.jobID) is not attached to this session")
        }
        return job
    }

    enum CancelAction: Equatable {
        /// Tell the session to stop the job now.
        case stop(session: UInt64, epoch: Int64)
        /// Its runner is away: it gets the stop when it reattaches the job.
        case stopOnReattach
        /// The job is between phases (its claim or its return to the queue is being stored):
        /// the cancel is recorded and applied when the phase settles.
        case deferred
    }

    /// A cancel of a job in the table: decided once; nil when the job is not here, a stop was
    /// decided already, or its end is being stored (that end stands).
    mutating func cancel(jobID: Int64, reason: String) -> CancelAction? {
        guard var job = jobs[jobID], job.cancelReason == nil, job.phase != .finishing else { return nil }
        job.cancelReason = reason
        jobs[jobID] = job
        switch job.phase {
        case .claiming, .requeueing, .finishing: return .deferred
        case .leased: return job.session.map { .stop(session: $0, epoch: job.epoch) } ?? .stopOnReattach
        }
    }

    // MARK: nodes

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
