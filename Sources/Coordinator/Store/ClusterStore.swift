/// What several coordinators sharing one store need beyond `CoordinatorStore`: which
/// coordinator holds which running job, which coordinators are alive, and signals between
/// them. `PostgresStore` implements it; a core on such a store works as one coordinator of a
/// cluster (see `JobLifecycle+Cluster.swift`).
///
/// The holder is fenced like the epoch: a store write about a running job (a runner's, or the
/// end of its lease) is refused unless this coordinator holds the job, so a coordinator that
/// lost a job to another (its runner reattached there, or it was taken for dead) cannot end it.
public protocol ClusterStore: CoordinatorStore {
    /// This coordinator's id in the store, new at every start.
    var coordinatorID: String { get }
    /// Records that this coordinator is alive now (by the store's clock); returns how many
    /// other coordinators beat within `within`.
    @discardableResult
    func beat(othersWithin within: Duration) async throws -> Int
    /// Makes this coordinator the holder of a running job whose runner came to it with the
    /// job's lease (`runner`, `epoch`); the job afterwards, nil when it is not running on that
    /// runner at that epoch.
    func adopt(jobID: Int64, epoch: Int64, runner: String) async throws -> JobRecord?
    /// Takes over the running jobs whose holder has not beaten for `silentFor` (by the store's
    /// clock), under a lock one coordinator holds at a time; another coordinator sweeping at
    /// the same moment makes this one return nothing.
    func adoptOrphans(silentFor: Duration) async throws -> [JobRecord]
    /// Makes this coordinator the holder again of running jobs whose runners are connected to
    /// it (`jobs`: id and epoch), should a sweep have taken them for orphans (this coordinator
    /// was slow to beat); returns the ids it took back.
    func reclaim(_ jobs: [LeaseRef]) async throws -> [Int64]
    /// Claims queued jobs for free runner slots, in one statement: the first queued jobs in
    /// queue order that fit a slot (the job's labels all among the slot's), read with
    /// `FOR UPDATE SKIP LOCKED` so that coordinators claiming at once never wait for each other
    /// and never take one job twice. Each job goes to the least busy slot it fits, running on
    /// its runner at the slot's next epoch, held by this coordinator. Returns the jobs claimed.
    func claimQueued(_ slots: [ClaimSlot], now: Int64) async throws -> [ClaimedJob]
    /// `createRun` (with `latestOnly`, `createLatestRun`: nil, nothing written, when a later
    /// version of the pipeline exists), then `claimQueued(slots)`, in one transaction and one
    /// round trip: the claim sees the new jobs and takes the first fitting ones in queue order,
    /// older queued jobs first.
    func createRunAndClaim(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                           trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String], now: Int64,
                           latestOnly: Bool, slots: [ClaimSlot]) async throws -> CreatedAndClaimed?
    /// `finishJob`, then, once the job is ended, `claimQueued(slots)`, in one transaction and
    /// one round trip: the claim for the slot the end frees comes with the end. Refused as
    /// `finishJob` is; a refused end claims nothing.
    func finishJobAndClaim(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64,
                           slots: [ClaimSlot]) async throws -> EndedAndClaimed
    /// Running jobs (of every coordinator), then the first queued ones in queue order, `limit`
    /// in all; and how many jobs are queued and running.
    func queueHead(limit: Int) async throws -> (jobs: [JobRecord], queued: Int, running: Int)
    /// The places in the queue (1: the next to go) of those of these jobs that are queued.
    func queuePlaces(jobIDs: [Int64]) async throws -> [Int64: Int]
    /// Checks that `directory` (`--data`) is the one every coordinator of the database uses:
    /// the marker file in it must name the marker the database recorded. The first
    /// coordinator of a database writes both. Throws `inconsistent`, naming `--data`, when
    /// they differ or one is missing.
    func checkDataDirectory(_ directory: String) async throws
    /// Moves a queued job to `target`, its place decided from the store's order under a lock
    /// that moves take one at a time, so concurrent moves from several coordinators are all
    /// applied. One row changes unless repeated moves into one gap used up the precision
    /// between two neighbours (then the queue is renumbered in the same transaction).
    func moveQueued(jobID: Int64, to target: MoveTarget) async throws -> QueueMove
    /// Sends signals, in order, to every coordinator of the cluster but this one (one
    /// round trip for all of them).
    func signal(_ signals: [ClusterSignal]) async throws
    /// Listens for the other coordinators' signals and hands each to `received`, until the
    /// calling task is cancelled. After the listening connection was lost (and made again),
    /// `.resync` says some may have been missed.
    func listen(_ received: @Sendable (ClusterSignal) -> Void) async
}

/// What a move in the store did.
public enum QueueMove: Sendable, Equatable {
    /// The job moved (as it is now, with its run).
    case moved(Moved)

    public struct Moved: Sendable, Equatable {
        public var job: JobRecord
        public var run: RunRecord
        /// Its position now, and `place`: the how-manieth in the queue (1: the next to go).
        public var position: Double
        /// Every queued job's position changed too.
        public var renumbered: Bool
        public var place: Int
    }
    /// The job is not queued.
    case notQueued
    /// The job to move next to is not queued.
    case noSuchAnchor
}

/// A wake-up from another coordinator.
public enum ClusterSignal: Sendable, Equatable {
    /// Jobs were queued (new, or requeued): coordinators with free runner slots claim.
    case queue
    /// A queued job was moved to `position`: the queue's watchers are told.
    case moved(jobID: Int64, position: Double)
    /// Drains, revocations or tokens changed.
    case state
    /// A running job was cancelled: its holder stops it.
    case cancel(jobID: Int64, reason: String)
    /// Jobs of these runs changed, or their logs have new durable bytes: their watchers read
    /// the store again.
    case run(runIDs: [Int64])
    /// Signals may have been missed: read everything again.
    case resync
    /// A coordinator started listening. One that thought itself alone (and so sent no
    /// `.queue` or `.run` signals) sends them again from now on, and a `.resync` for what it
    /// did not send.
    case hello
}

/// A run stored with its jobs, and the jobs the claim that followed took
/// (`ClusterStore.createRunAndClaim`), in the order of their epochs.
public struct CreatedAndClaimed: Sendable {
    public var run: RunRecord
    public var jobs: [JobRecord]
    public var claimed: [ClaimedJob]

    public init(run: RunRecord, jobs: [JobRecord], claimed: [ClaimedJob]) {
        self.run = run
        self.jobs = jobs
        self.claimed = claimed
    }
}

/// A job's end stored, and what the claim for free slots that followed it in the same call took
/// (`ClusterStore.finishJobAndClaim`), in the order of their epochs.
public struct EndedAndClaimed: Sendable {
    public var run: RunRecord
    public var job: JobRecord
    public var claimed: [ClaimedJob]

    public init(run: RunRecord, job: JobRecord, claimed: [ClaimedJob]) {
        self.run = run
        self.job = job
        self.claimed = claimed
    }
}

/// Free slots of one runner, for `ClusterStore.claimQueued`.
public struct ClaimSlot: Sendable, Equatable {
    public var runner: String
    public var labels: Set<String>
    /// Jobs the runner runs now (the least busy fitting slot takes a job first).
    public var running: Int
    /// One epoch per free slot, ascending: the claims' epochs, in the order the runner is told.
    public var epochs: [Int64]

    public init(runner: String, labels: Set<String>, running: Int, epochs: [Int64]) {
        self.runner = runner
        self.labels = labels
        self.running = running
        self.epochs = epochs
    }
}
