import Logging
import PostgresNIO

/// A statement of the job lifecycle (many per job), prepared once per connection: the server
/// parses it once and may reuse its plan, where a query sent as text is parsed and planned at
/// every execution (most of a short statement's cost). Rows come back as they are, for the
/// store's decoders.
protocol LifecycleStatement: PostgresPreparedStatement where Row == PostgresRow {}

extension LifecycleStatement {
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

extension PostgresConnection {
    /// Every row of a prepared lifecycle statement.
    func rows<Statement: LifecycleStatement>(_ statement: Statement, logger: Logger) async throws -> [PostgresRandomAccessRow] {
        var rows: [PostgresRandomAccessRow] = []
        for try await row in try await execute(statement, logger: logger) {
            rows.append(row.makeRandomAccess())
        }
        return rows
    }
}

/// Builds bindings in order: `$1`, `$2`, ...
private func bindings(_ build: (inout PostgresBindings) throws -> Void) rethrows -> PostgresBindings {
    var bindings = PostgresBindings()
    try build(&bindings)
    return bindings
}

extension PostgresStore {
    /// Ends jobs, the k-th as `PostgresStore.JobEnd` `ends[k]` says, fenced by `holder`, then
    /// claims for the slots of the `claimer`-th (from 1; 0: none) once it is ended
    /// (`PostgresStore.endJobsFunction`): a row per end, with its `end_ordinal` (from 1),
    /// `end_outcome`, and, when ended, the job's columns and its run's prefixed `r_`; then the
    /// claim's rows, with the columns `ClaimQueued` answers (`end_ordinal` null).
    struct FinishJobs: LifecycleStatement {
        static let sql = """
            SELECT c.end_ordinal, c.end_outcome, \(ClaimQueued.columns(of: "c"))
            FROM heddle_end_jobs($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::boolean[], $6::bigint[],
                                 $7::text[], $8::text[], $9, $10, $11::jsonb) AS c
            """
        var ends: [PostgresStore.JobEnd], holder: String
        var claimer: Int64, slots: String

        func makeBindings() throws -> PostgresBindings {
            bindings {
                $0.append(ends.map(\.id)); $0.append(ends.map(\.status.rawValue)); $0.append(ends.map(\.reason))
                $0.append(ends.map(\.now)); $0.append(ends.map { $0.epoch != nil }); $0.append(ends.map { $0.epoch ?? 0 })
                // Nodes still running end as the job did when it was cancelled, else failed; the
                // others are cancelled with a cancelled job, else skipped.
                $0.append(ends.map { $0.status == .cancelled ? "cancelled" : "failed" })
                $0.append(ends.map { $0.status == .cancelled ? Status.cancelled.rawValue : Status.skipped.rawValue })
                $0.append(holder); $0.append(claimer); $0.append(slots)
            }
        }
    }

    /// Sets a run's latest attempt's status (and the run's) from its jobs; returns the run
    /// (`PostgresStore.runStatusFunction`).
    struct RunStatus: LifecycleStatement {
        static let sql = "SELECT * FROM heddle_run_status($1, $2)"
        var runID: Int64, now: Int64
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(runID); $0.append(now) } }
    }

    /// Marks queued jobs running on their runners at their epochs, held by `holder`, and their
    /// runs and attempts running, in one statement; returns a row per claimed job and node
    /// (`LEFT JOIN`: a job with no node has one row, its `n_` columns null), in job and node
    /// order: the job's columns (`jobColumns`), its run's prefixed `r_` as it was before the
    /// statement, `started` when the statement started the run, the project's `repository`,
    /// and the node's columns prefixed `n_`. Jobs no longer queued are left out. `claims`: a
    /// row source of `(claimed, claimed_by, claimed_at)`; `now` and `holder`: parameters.
    static func claimSQL(claims: String, now: String, holder: String) -> String {
        """
        WITH x AS (
            SELECT claimed, claimed_by, claimed_at FROM \(claims)
        ), c AS (
            UPDATE job SET status = 'running', runner = x.claimed_by, epoch = x.claimed_at, started_at = \(now), holder = \(holder)
            FROM x WHERE job.id = x.claimed AND job.status = 'queued'
            RETURNING job.*
        ), started AS (
            UPDATE run SET status = 'running', started_at = COALESCE(run.started_at, \(now))
            WHERE run.id IN (SELECT c.run_id FROM c) AND run.status = 'queued' RETURNING run.id
        ), attempts AS (
            UPDATE attempt SET status = 'running', started_at = COALESCE(attempt.started_at, \(now))
            FROM c WHERE attempt.run_id = c.run_id AND attempt.number = c.attempt AND attempt.status = 'queued'
        )
        SELECT \(PostgresStore.qualified(PostgresStore.jobColumns, by: "c")),
               \(PostgresStore.prefixed(PostgresStore.runColumns, from: "run", as: "r_")),
               run.id IN (SELECT started.id FROM started) AS started, COALESCE(project.repository, '') AS repository,
               \(PostgresStore.prefixed(PostgresStore.nodeReadColumns, from: "node", as: "n_"))
        FROM c JOIN run ON run.id = c.run_id LEFT JOIN project ON project.name = run.project
        LEFT JOIN node ON node.job_id = c.id
        ORDER BY c.id, node.ordinal
        """
    }

    /// `claimSQL` for given jobs, runners and epochs (`claimJobs`: what an in-memory scheduler placed).
    struct ClaimJobs: LifecycleStatement {
        static let sql = PostgresStore.claimSQL(claims: "unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(claimed, claimed_by, claimed_at)",
                                                now: "$4", holder: "$5")
        var ids: [Int64], runners: [String], epochs: [Int64], now: Int64, holder: String
        func makeBindings() throws -> PostgresBindings {
            bindings { $0.append(ids); $0.append(runners); $0.append(epochs); $0.append(now); $0.append(holder) }
        }
    }

    /// Claims for runners' free slots: the queued jobs that fit them, picked in queue order,
    /// locked and marked running in one call (`PostgresStore.claimQueuedFunction`); its rows
    /// in the order picked, with the columns `claimSQL` answers. `slots`: the function's JSON.
    struct ClaimQueued: LifecycleStatement {
        static let sql = "SELECT \(columns(of: "c")) FROM heddle_claim_queued($1::jsonb, $2, $3) AS c"

        /// The columns of a claim's rows (`claimSQL`'s) from the composite columns of the
        /// function's rows, `c`.
        static func columns(of c: String) -> String {
            """
            \(PostgresStore.qualified(PostgresStore.jobColumns, by: "(\(c).job_row)")),
            \(PostgresStore.prefixed(PostgresStore.runColumns, from: "(\(c).run_row)", as: "r_")),
            \(c).started, \(c).repository,
            \(PostgresStore.prefixed(PostgresStore.nodeReadColumns, from: "(\(c).node_row)", as: "n_"))
            """
        }
        var slots: String, now: Int64, holder: String
        func makeBindings() throws -> PostgresBindings {
            bindings { $0.append(slots); $0.append(now); $0.append(holder) }
        }
    }

    /// A project's pipeline's latest version.
    struct LatestPipeline: LifecycleStatement {
        static let sql = "SELECT \(PostgresStore.pipelineColumns) WHERE p.name = $1 AND v.pipeline = $2 ORDER BY v.version DESC LIMIT 1"
        var project: String, pipeline: String
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(project); $0.append(pipeline) } }
    }

    /// Runs, each with its first attempt, its jobs (at the end of the queue, in the order
    /// given, each run's in its pipeline's order) and their nodes, then a claim for the
    /// `claimer`-th run's slots when it lists any and that run was stored
    /// (`PostgresStore.createRunsFunction`): a row per job stored (`created_ordinal`, its
    /// run's place in `runs` from 1, `created_run`, `created_id`, `created_name`,
    /// `created_position`), then the claim's rows, with the columns `ClaimQueued` answers
    /// (`created_id` null). A run with `latestOnly` is not stored while a later version of
    /// its pipeline exists.
    struct CreateRuns: LifecycleStatement {
        static let sql = """
            SELECT c.created_ordinal, c.created_run, c.created_id, c.created_name, c.created_position, \(ClaimQueued.columns(of: "c"))
            FROM heddle_create_runs($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                                    $8::text[], $9::text[]::jsonb[], $10::text[]::jsonb[], $11::boolean[], $12::text[],
                                    $13::boolean[], $14, $15::jsonb, $16) AS c
            """
        var runs: [PostgresStore.RunInsert]
        /// The place in `runs` (from 1; 0: none) of the run whose slots are claimed for.
        var claimer: Int64
        var slots: String, holder: String

        func makeBindings() throws -> PostgresBindings {
            bindings {
                $0.append(runs.map(\.version.project)); $0.append(runs.map(\.version.pipeline)); $0.append(runs.map(\.version.id))
                $0.append(runs.map(\.branch)); $0.append(runs.map(\.trigger)); $0.append(runs.map(\.now))
                $0.append(runs.map(\.commit)); $0.append(runs.map(\.triggeredBy)); $0.append(runs.map(\.json.jobs))
                $0.append(runs.map(\.json.nodes)); $0.append(runs.map(\.fork)); $0.append(runs.map(\.inputsJSON))
                $0.append(runs.map(\.latestOnly)); $0.append(claimer); $0.append(slots); $0.append(holder)
            }
        }
    }
}
