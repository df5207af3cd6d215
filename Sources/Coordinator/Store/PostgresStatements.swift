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
    /// Ends a job (fenced when `fenced`: running at `epoch`, held by `holder`) and its nodes not
    /// yet finished (running ones as `ended`, the others as `leftover`); returns the job.
    struct FinishJob: LifecycleStatement {
        static let sql = """
            WITH j AS (
                UPDATE job SET status = $1, reason = $2, finished_at = $3, started_at = COALESCE(started_at, $3)
                WHERE id = $4 AND (NOT $5 OR (status = 'running' AND epoch = $6 AND holder = $7))
                RETURNING \(PostgresStore.jobColumns)
            ), n AS (
                UPDATE node SET status = CASE WHEN status = 'running' THEN $8 ELSE $9 END,
                                finished_at = CASE WHEN status = 'running' THEN $3 ELSE finished_at END
                WHERE job_id = $4 AND status IN ('pending', 'running') AND EXISTS (SELECT 1 FROM j)
            )
            SELECT * FROM j
            """
        var status: String, reason: String, now: Int64, id: Int64, fenced: Bool, epoch: Int64, holder: String
        var ended: String, leftover: String

        func makeBindings() throws -> PostgresBindings {
            bindings {
                $0.append(status); $0.append(reason); $0.append(now); $0.append(id); $0.append(fenced); $0.append(epoch)
                $0.append(holder); $0.append(ended); $0.append(leftover)
            }
        }
    }

    /// Locks a run's row; returns its latest attempt's number.
    struct LockRun: LifecycleStatement {
        static let sql = "SELECT attempt FROM run WHERE id = $1 FOR UPDATE"
        var runID: Int64
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(runID) } }
    }

    /// The statuses of an attempt's jobs.
    struct AttemptStatuses: LifecycleStatement {
        static let sql = "SELECT status FROM job WHERE run_id = $1 AND attempt = $2"
        var runID: Int64, attempt: Int64
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(runID); $0.append(attempt) } }
    }

    /// Sets a run's and its latest attempt's status; returns the run.
    struct SetRunStatus: LifecycleStatement {
        static let sql = """
            WITH a AS (
                UPDATE attempt SET status = $1, finished_at = $2, started_at = COALESCE(started_at, $3)
                WHERE run_id = $4 AND number = $5
            )
            UPDATE run SET status = $1, finished_at = $2 WHERE id = $4 RETURNING \(PostgresStore.runColumns)
            """
        var status: String, finished: Int64?, started: Int64?, runID: Int64, attempt: Int64
        func makeBindings() throws -> PostgresBindings {
            bindings { $0.append(status); $0.append(finished); $0.append(started); $0.append(runID); $0.append(attempt) }
        }
    }

    /// Queued jobs in queue order whose labels fit one of `fits` (JSON arrays), past `seen`,
    /// locked, skipping those another claim holds.
    struct PickQueued: LifecycleStatement {
        static let sql = """
            SELECT id, labels::text AS labels FROM job
            WHERE status = 'queued' AND labels <@ ANY($1::text[]::jsonb[]) AND id <> ALL($2::bigint[])
            ORDER BY position, id LIMIT $3 FOR UPDATE SKIP LOCKED
            """
        var fits: [String], seen: [Int64], limit: Int64
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(fits); $0.append(seen); $0.append(limit) } }
    }

    /// Marks queued jobs running on their runners at their epochs, held by `holder`.
    struct ClaimJobs: LifecycleStatement {
        static let sql = """
            UPDATE job SET status = 'running', runner = c.claimed_by, epoch = c.claimed_at, started_at = $4, holder = $5
            FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS c(claimed, claimed_by, claimed_at)
            WHERE job.id = c.claimed AND job.status = 'queued'
            RETURNING \(PostgresStore.qualified(PostgresStore.jobColumns, by: "job"))
            """
        var ids: [Int64], runners: [String], epochs: [Int64], now: Int64, holder: String
        func makeBindings() throws -> PostgresBindings {
            bindings { $0.append(ids); $0.append(runners); $0.append(epochs); $0.append(now); $0.append(holder) }
        }
    }

    /// Starts the runs and attempts of claimed jobs; returns the runs (as they were before the
    /// statement, with `started` for those it started) and their projects' repositories.
    struct StartRuns: LifecycleStatement {
        static let sql = """
            WITH started AS (
                UPDATE run SET status = 'running', started_at = COALESCE(started_at, $3)
                WHERE id = ANY($1::bigint[]) AND status = 'queued' RETURNING id
            ), attempts AS (
                UPDATE attempt SET status = 'running', started_at = COALESCE(attempt.started_at, $3)
                FROM job WHERE job.id = ANY($2::bigint[]) AND attempt.run_id = job.run_id AND attempt.number = job.attempt
                  AND attempt.status = 'queued'
            )
            SELECT \(PostgresStore.qualified(PostgresStore.runColumns, by: "run")),
                   run.id IN (SELECT id FROM started) AS started, COALESCE(project.repository, '') AS repository
            FROM run LEFT JOIN project ON project.name = run.project WHERE run.id = ANY($1::bigint[])
            """
        var runIDs: [Int64], jobIDs: [Int64], now: Int64
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(runIDs); $0.append(jobIDs); $0.append(now) } }
    }

    /// The nodes of jobs, by job and then the pipeline's order.
    struct Nodes: LifecycleStatement {
        static let sql = "SELECT * FROM node WHERE job_id = ANY($1::bigint[]) ORDER BY job_id, ordinal"
        var jobIDs: [Int64]
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(jobIDs) } }
    }

    /// A project's pipeline's latest version.
    struct LatestPipeline: LifecycleStatement {
        static let sql = "SELECT \(PostgresStore.pipelineColumns) WHERE p.name = $1 AND v.pipeline = $2 ORDER BY v.version DESC LIMIT 1"
        var project: String, pipeline: String
        func makeBindings() throws -> PostgresBindings { bindings { $0.append(project); $0.append(pipeline) } }
    }

    /// A run, its first attempt, its jobs (at the end of the queue, in the pipeline's order) and
    /// their nodes; returns the jobs.
    struct CreateRun: LifecycleStatement {
        static let sql = """
            WITH r AS (
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at,
                                 commit_sha, triggered_by, fork, inputs)
                VALUES ($1, $2, $3, $4, 'queued', 1, $5, $6, $7, $8, $11, $12)
                RETURNING id
            ), a AS (
                INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by)
                SELECT id, 1, 'queued', $5, $6, $8 FROM r
            ), j AS (
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost, cache)
                SELECT r.id, 1, d.name, d.labels::jsonb, 'queued', nextval('job_position')::float8, $6, d.retry_lost, d.cache
                FROM r, jsonb_to_recordset($9::jsonb) AS d(ordinal bigint, name text, labels text, retry_lost bigint, cache text)
                ORDER BY d.ordinal
                RETURNING id, run_id, name, position
            ), n AS (
                INSERT INTO node (job_id, \(PostgresStore.nodeColumns), status)
                SELECT j.id, \(PostgresStore.qualified(PostgresStore.nodeColumns, by: "d")), 'pending'
                FROM jsonb_to_recordset($10::jsonb) AS d(\(PostgresStore.nodeRecordset))
                JOIN j ON j.name = d.job
            )
            SELECT j.run_id, j.id, j.name, j.position FROM j
            """
        var project: String, pipeline: String, versionID: Int64, branch: String, trigger: String, now: Int64
        var commit: String, triggeredBy: String, jobs: String, nodes: String, fork: Bool, inputs: String
        func makeBindings() throws -> PostgresBindings {
            bindings {
                $0.append(project); $0.append(pipeline); $0.append(versionID); $0.append(branch); $0.append(trigger)
                $0.append(now); $0.append(commit); $0.append(triggeredBy); $0.append(jobs); $0.append(nodes); $0.append(fork)
                $0.append(inputs)
            }
        }
    }
}
