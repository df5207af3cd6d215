import Foundation
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Cron expressions as crontab(5) reads them, `on.schedule` in `.act` files, and each due
/// time starting exactly one run.
@Suite struct ScheduleTests {
    static func utc(_ text: String) -> Date {
        let formatter = ISO8601DateFormatter()
        guard let date = formatter.date(from: text) else { fatalError("not a date: \(text)") }
        return date
    }

    static func next(_ expression: String, after: String, zone: String = "UTC") throws -> String? {
        let cron = try CronExpression(expression)
        return cron.next(after: utc(after), in: TimeZone(identifier: zone)!).map { ISO8601DateFormatter().string(from: $0) }
    }

    /// (expression, after, the next due time) in UTC; 2026-12-06 is a Sunday. The examples
    /// of crontab(5) and the rules it states: ranges, steps, lists, names, 0 and 7 for Sunday,
    /// "or" when both day fields are restricted, "and" when one starts with `*`.
    static let table: [(String, String, String?)] = [
        ("0 3 * * 1-5", "2026-12-04T03:00:00Z", "2026-12-07T03:00:00Z"),        // Friday → Monday
        ("*/15 * * * *", "2026-12-06T10:07:30Z", "2026-12-06T10:15:00Z"),
        ("0,30 * * * *", "2026-12-06T10:30:00Z", "2026-12-06T11:00:00Z"),
        ("5/20 * * * *", "2026-12-06T10:05:00Z", "2026-12-06T10:25:00Z"),       // 5-59/20
        ("23 0-23/2 * * *", "2026-12-06T00:23:00Z", "2026-12-06T02:23:00Z"),    // crontab(5)'s example
        ("5 4 * * sun", "2026-12-06T04:05:00Z", "2026-12-13T04:05:00Z"),        // crontab(5)'s example
        ("0 0 * * 7", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"),          // 7 is Sunday too
        ("0 0 * * 0", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"),
        ("0 9-17/4 * * mon-fri", "2026-12-06T12:00:00Z", "2026-12-07T09:00:00Z"),
        ("0 9-17/4 * * mon-fri", "2026-12-07T13:00:00Z", "2026-12-07T17:00:00Z"),
        ("0 0 1,15 * 3", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"),       // or: a Wednesday
        ("0 0 1,15 * 3", "2026-12-09T00:00:00Z", "2026-12-15T00:00:00Z"),       // or: the 15th, a Tuesday
        ("0 0 */2 * 1", "2026-12-06T00:00:00Z", "2026-12-07T00:00:00Z"),        // and: Monday the 7th
        ("0 0 */2 * 1", "2026-12-07T00:00:00Z", "2026-12-21T00:00:00Z"),        // not Monday the 14th
        ("30 4 1-7 * *", "2026-12-07T04:30:00Z", "2027-01-01T04:30:00Z"),
        ("0 12 1 jan,JUL *", "2026-12-06T00:00:00Z", "2027-01-01T12:00:00Z"),
        ("0 12 1 jan,JUL *", "2027-01-01T12:00:00Z", "2027-07-01T12:00:00Z"),
        ("59 23 31 12 *", "2026-12-06T00:00:00Z", "2026-12-31T23:59:00Z"),
        ("0 0 29 2 *", "2026-12-06T00:00:00Z", "2028-02-29T00:00:00Z"),         // the next leap day
        ("0 0 30 2 *", "2026-12-06T00:00:00Z", nil),                            // never
        ("* * * * *", "2026-12-06T10:07:59Z", "2026-12-06T10:08:00Z"),
        ("* * * * *", "2026-12-06T10:08:00Z", "2026-12-06T10:09:00Z"),          // strictly after
        ("@hourly", "2026-12-06T10:07:00Z", "2026-12-06T11:00:00Z"),
        ("@daily", "2026-12-06T10:07:00Z", "2026-12-07T00:00:00Z"),
        ("@midnight", "2026-12-06T10:07:00Z", "2026-12-07T00:00:00Z"),
        ("@weekly", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"),
        ("@monthly", "2026-12-06T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("@yearly", "2026-12-06T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("@annually", "2026-12-06T00:00:00Z", "2027-01-01T00:00:00Z"),
    ]

    @Test func cronExpressionsAreDueWhenCrontabSays() throws {
        for (expression, after, expected) in Self.table {
            #expect(try Self.next(expression, after: after) == expected, "\(expression) after \(after)")
        }
    }

    @Test func aTimeZoneMovesTheDueTimesAndDaylightSavingSkipsOrRepeatsNothingTwice() throws {
        #expect(try Self.next("0 3 * * *", after: "2026-12-06T00:00:00Z", zone: "Europe/Berlin") == "2026-12-06T02:00:00Z")
        #expect(try Self.next("0 0 * * *", after: "2026-12-06T00:00:00Z", zone: "America/New_York") == "2026-12-06T05:00:00Z")
        // 2027-03-28 02:30 does not exist in Berlin (02:00 → 03:00): not due that day.
        #expect(try Self.next("30 2 * * *", after: "2027-03-27T02:00:00Z", zone: "Europe/Berlin") == "2027-03-29T00:30:00Z")
        // 2027-10-31 02:30 happens twice in Berlin (03:00 → 02:00): due once.
        let first = try #require(try Self.next("30 2 * * *", after: "2027-10-30T12:00:00Z", zone: "Europe/Berlin"))
        #expect(first == "2027-10-31T00:30:00Z")
        #expect(try Self.next("30 2 * * *", after: first, zone: "Europe/Berlin") == "2027-11-01T01:30:00Z")
    }

    @Test func theLatestDueTimeIsFoundHoweverFarBehind() throws {
        let utc = TimeZone(identifier: "UTC")!
        let fiveMinutes = try CronExpression("*/5 * * * *")
        #expect(fiveMinutes.latest(after: Self.utc("2026-12-06T10:00:00Z"), atOrBefore: Self.utc("2026-12-06T10:17:30Z"), in: utc)
                == Self.utc("2026-12-06T10:15:00Z"))
        #expect(fiveMinutes.latest(after: Self.utc("2026-12-06T10:05:00Z"), atOrBefore: Self.utc("2026-12-06T10:09:59Z"), in: utc) == nil)
        #expect(fiveMinutes.latest(after: Self.utc("2026-12-06T10:05:00Z"), atOrBefore: Self.utc("2026-12-06T10:10:00Z"), in: utc)
                == Self.utc("2026-12-06T10:10:00Z"))
        let everyMinute = try CronExpression("* * * * *")
        #expect(everyMinute.latest(after: Self.utc("2025-01-01T00:00:00Z"), atOrBefore: Self.utc("2026-12-06T10:07:30Z"), in: utc)
                == Self.utc("2026-12-06T10:07:00Z"))
        let newYear = try CronExpression("@yearly")
        #expect(newYear.latest(after: Self.utc("2019-06-01T00:00:00Z"), atOrBefore: Self.utc("2026-12-06T10:07:30Z"), in: utc)
                == Self.utc("2026-01-01T00:00:00Z"))
    }

    @Test func aBadExpressionSaysWhatIsWrong() {
        let cases: [(String, String)] = [
            ("61 * * * *", "61 is out of range for the minute (0–59)"),
            ("0 24 * * *", "24 is out of range for the hour (0–23)"),
            ("0 0 0 * *", "0 is out of range for the day of month (1–31)"),
            ("0 0 * 13 *", "13 is out of range for the month (1–12)"),
            ("0 0 * * 8", "8 is out of range for the day of week (0–7)"),
            ("* * *", "has 3 fields; a cron expression has five"),
            ("* * * * * *", "has 6 fields"),
            ("", "has 0 fields"),
            ("5-1 * * * *", "the minute range '5-1' runs backwards"),
            ("*/0 * * * *", "the step of the minute item '*/0' is not a number from 1 to 59"),
            ("1/2/3 * * * *", "has more than one '/'"),
            ("1,,2 * * * *", "has an empty item"),
            ("0 0 * * funday", "'funday' is not a day of week"),
            ("0 0 * smarch *", "'smarch' is not a month"),
            ("x * * * *", "'x' is not a minute"),
            ("-5 * * * *", "'' is not a minute"),
            ("+5 * * * *", "'+5' is not a minute"),
            ("@reboot", "'@reboot' is not a shortcut Heddle knows"),
        ]
        for (expression, says) in cases {
            #expect(throws: CronError.self, "\(expression)") { try CronExpression(expression) }
            do {
                _ = try CronExpression(expression)
            } catch {
                #expect(error.message.contains(says), "\(expression): \(error.message)")
            }
        }
    }

    static let pipeline = """
        name: nightly
        on:
          schedule:
            - cron: "0 3 * * 1-5"
              branch: release
            - cron: "@daily"
              timezone: Europe/Berlin
        jobs:
          build:
            nodes:
              make: { run: "true" }
        """

    @Test func onScheduleParsesWithItsDefaults() throws {
        let parsed = try ActParser(file: "nightly.act").parse(Self.pipeline)
        #expect(parsed.triggers.schedules == [
            Schedule(cron: try CronExpression("0 3 * * 1-5"), timeZone: "UTC", branch: "release"),
            Schedule(cron: try CronExpression("@daily"), timeZone: "Europe/Berlin", branch: "main"),
        ])
        #expect(parsed.triggers.push == nil && parsed.triggers.pullRequest == nil, "a schedule starts no forge's events")
    }

    @Test func aBadScheduleIsRefusedAtItsLine() {
        let job = "jobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n"
        let cases: [(String, Int, String)] = [
            ("on:\n  schedule:\n    - cron: \"61 * * * *\"\n", 3, "`cron`: 61 is out of range for the minute (0–59)"),
            ("on:\n  schedule:\n    - cron: \"0 0 30 2 *\"\n", 3, "`cron` '0 0 30 2 *' is never due"),
            ("on:\n  schedule:\n    - cron: \"@daily\"\n      timezone: Mars/Olympus\n", 4,
             "`timezone` 'Mars/Olympus' is not an IANA time zone name"),
            ("on:\n  schedule: \"0 3 * * *\"\n", 2, "`on.schedule` must be a list of entries"),
            ("on:\n  schedule: []\n", 2, "`on.schedule` must be a list of entries"),
            ("on:\n  schedule:\n    - cron: \"@daily\"\n    - cron: \"@daily\"\n", 4, "has '@daily' on main in UTC twice"),
            ("on:\n  schedule:\n    - crontab: \"@daily\"\n", 3, "crontab"),
            ("on:\n  schedule:\n    - branch: main\n", 3, "has no `cron`"),
            ("on:\n  schedule:\n    - cron: \"@daily\"\n      branch: \"bad..name\"\n", 4, "`branch`:"),
            ("inputs:\n  target:\non:\n  schedule:\n    - cron: \"@daily\"\n", 4, "input 'target' has no default"),
        ]
        for (on, line, says) in cases {
            let source = "name: ci\n" + on + job
            do {
                _ = try ActParser(file: "ci.act").parse(source)
                Issue.record("accepted: \(source)")
            } catch {
                #expect(error.line == line + 1 && error.message.contains(says), "\(on): \(error)")
            }
        }
    }

    /// The store decides which start of a due time wins: one run per due time, none for a due
    /// time at or before the latest started, whoever asks and however often.
    @Test(arguments: StoreKind.allCases)
    func eachDueTimeCreatesOneRunWhoeverAsks(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            // Two coordinators' stores on PostgreSQL; SQLite has one coordinator, its store.
            let one = try await database.open()
            let stores = [one, kind == .postgres ? try await database.open() : one]
            let definition = try ActParser(file: "nightly.act").parse(Self.pipeline)
            let version = try await stores[0].savePipeline(project: "shop", definition: definition, source: Self.pipeline, now: 1)
            let schedule = definition.triggers.schedules[0].key
            func start(_ store: any CoordinatorStore, due: Int64) async throws -> RunRecord? {
                try await store.createScheduledRun(ScheduleStart(project: "shop", pipeline: "nightly", schedule: schedule, due: due),
                                                   version: version, definition: definition, branch: "release",
                                                   triggeredBy: "schedule", inputs: [:], now: due + 5)?.0
            }
            // Ten due times, each asked for four times at once through two stores.
            for round in 1...10 {
                let due = Int64(round) * 60_000
                let created = try await withThrowingTaskGroup(of: RunRecord?.self) { group in
                    for index in 0..<4 { group.addTask { try await start(stores[index % 2], due: due) } }
                    return try await group.reduce(into: [RunRecord]()) { if let run = $1 { $0.append(run) } }
                }
                #expect(created.count == 1, "due \(due): \(created.count) runs")
                #expect(created.first?.trigger == "schedule" && created.first?.branch == "release")
            }
            #expect(try await start(stores[0], due: 5 * 60_000) == nil, "a due time before the latest started")
            #expect(try await start(stores[1], due: 10 * 60_000) == nil, "the latest started, again")
            let runs = try await stores[0].runs(limit: 100, filter: RunFilter())
            #expect(runs.count == 10 && runs.allSatisfy { $0.trigger == "schedule" && $0.triggeredBy == "schedule" })
            let starts = try await stores[1].scheduleStarts()
            #expect(starts.count == 1 && starts.first?.due == 10 * 60_000 && starts.first?.runID == runs.map(\.id).max())
            let jobs = try await stores[0].jobs(runID: try #require(starts.first?.runID), attempt: 1)
            #expect(jobs.map(\.name) == ["build"] && jobs.allSatisfy { $0.status == .queued })
        }
    }

    /// The coordinator's side: a schedule that missed due times (no coordinator ran) starts
    /// once for the latest; asked again, or by a second coordinator on the same database, or
    /// after a restart, it starts nothing until its next due time.
    @Test(arguments: StoreKind.allCases)
    func missedDueTimesStartOnceAndARestartStartsNothingAgain(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let data = try TemporaryDirectory("heddle-schedules")
            defer { data.remove() }
            let admin = Principal(name: "root", role: .admin)
            let store = try await database.open()
            let first = try CoordinatorCore(store: store, directory: data.path)
            _ = try await first.catalog.createProject(name: "shop", repository: "", as: admin)
            let source = """
                name: hourly
                inputs:
                  target: { default: staging }
                on:
                  schedule:
                    - cron: "0 * * * *"
                jobs:
                  build:
                    nodes:
                      make: { run: "true" }
                """
            let version = try await first.catalog.pushPipeline(PipelinePush(project: "shop", fileName: "hourly.act", source: source),
                                                               as: admin)
            let pushed = Date(milliseconds: version.createdAt)
            let hour = (pushed.timeIntervalSince1970 / 3600).rounded(.down) * 3600
            // Three hours later: three due times passed; one run, for the latest.
            let later = Date(timeIntervalSince1970: hour + 3 * 3600 + 600)
            let started = try await first.schedules.startDue(now: later)
            #expect(started.started.count == 1)
            #expect(started.next == Date(timeIntervalSince1970: hour + 4 * 3600))
            let runID = try #require(started.started.first?.runID)
            let run = try #require(try await first.store.run(id: runID))
            #expect(run.trigger == "schedule" && run.branch == "main" && run.inputs == ["target": "staging"])
            #expect(run.triggeredBy.hasPrefix("schedule '0 * * * *' due ") && run.triggeredBy.contains("Z"), "\(run.triggeredBy)")
            #expect(try await first.schedules.startDue(now: later).started.isEmpty, "asked again")
            // A second coordinator on the same database, and a restart: nothing more.
            let second = try CoordinatorCore(store: kind == .postgres ? try await database.open() : store, directory: data.path)
            #expect(try await second.schedules.startDue(now: later).started.isEmpty, "another coordinator")
            // The listing: next due, the latest started and its run.
            let listed = try await second.schedules.list(project: "shop", as: Principal(name: "v", role: .viewer), now: later)
            #expect(listed == [ScheduleInfo(project: "shop", pipeline: "hourly", cron: "0 * * * *", timeZone: "UTC", branch: "main",
                                            nextDue: Date(timeIntervalSince1970: hour + 4 * 3600).milliseconds,
                                            lastDue: Date(timeIntervalSince1970: hour + 3 * 3600).milliseconds, lastRunID: run.id)])
            await #expect(throws: CoordinatorError.notFound("project nowhere does not exist")) {
                try await second.schedules.list(project: "nowhere", as: admin)
            }
            await #expect(throws: CoordinatorError.self) {
                try await second.schedules.list(project: "../bad", as: admin)
            }
            // The next hour: one more, from whichever asks first.
            let next = Date(timeIntervalSince1970: hour + 4 * 3600 + 1)
            async let a = first.schedules.startDue(now: next)
            async let b = second.schedules.startDue(now: next)
            let (fromFirst, fromSecond) = try await (a, b)
            #expect(fromFirst.started.count + fromSecond.started.count == 1)
            let runs = try await first.store.runs(limit: 10, filter: RunFilter())
            #expect(runs.count == 2 && runs.allSatisfy { $0.trigger == "schedule" })
        }
    }
}
