import Foundation
import TestSupport
import Testing
@testable import Coordinator

/// A node log read by line and searched whole, through the coordinator's line index.
@Suite struct LogLinesTests {
    let admin = Principal(name: "root", role: .admin)

    /// 2,500 lines (every 100th in red, FAILED), then an unfinished one; written in pieces
    /// that cut lines.
    static func log() -> (text: String, pieces: [Data]) {
        var text = ""
        for number in 1...2500 {
            text += number % 100 == 0 ? "line \(number) \u{1B}[31mFAIL\u{1B}[0mED here\n" : "line \(number)\n"
        }
        text += "tail"
        let bytes = Data(text.utf8)
        let pieces = stride(from: 0, to: bytes.count, by: 7_777).map { bytes[$0..<min(bytes.count, $0 + 7_777)] }.map { Data($0) }
        return (text, pieces)
    }

    @Test(arguments: StoreKind.allCases) func linesAreReadFromAnyNumberAndTheirOffsets(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let setup = try await DurabilityTests.Setup.make(database)
            let (text, pieces) = Self.log()
            let log = try await setup.writeLog(pieces)
            let catalog = setup.core.catalog
            let read = LogRead(runID: setup.runID, job: "j", node: "n")
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
            func offset(of line: Int) -> Int64 { Int64(lines[..<(line - 1)].reduce(0) { $0 + $1.utf8.count + 1 }) }

            let none = try await catalog.readLines(read, first: 1, count: 0, as: admin)
            #expect(none.lines == 2501 && none.count == 0 && none.length == Int64(log.count) && none.data.isEmpty)
            let head = try await catalog.readLines(read, first: 1, count: 3, as: admin)
            #expect(String(decoding: head.data, as: UTF8.self) == "line 1\nline 2\nline 3\n" && head.offset == 0 && head.count == 3)
            // Across a recorded start (every 1,000 lines).
            let across = try await catalog.readLines(read, first: 999, count: 4, as: admin)
            #expect(String(decoding: across.data, as: UTF8.self) == "line 999\nline 1000 \u{1B}[31mFAIL\u{1B}[0mED here\nline 1001\nline 1002\n")
            #expect(across.offset == offset(of: 999) && across.firstLine == 999)
            let end = try await catalog.readLines(read, first: 2500, count: 10, as: admin)
            #expect(String(decoding: end.data, as: UTF8.self) == "line 2500 \u{1B}[31mFAIL\u{1B}[0mED here\ntail" && end.count == 2)
            let past = try await catalog.readLines(read, first: 2502, count: 10, as: admin)
            #expect(past.count == 0 && past.data.isEmpty && past.lines == 2501)
            await #expect(throws: CoordinatorError.self) { try await catalog.readLines(read, first: 0, count: 1, as: admin) }
            await #expect(throws: CoordinatorError.self) { try await catalog.readLines(read, first: 1, count: 10_001, as: admin) }

            // The line that holds a byte.
            #expect(try await catalog.lineNumber(read, containing: 0, as: admin) == 1)
            #expect(try await catalog.lineNumber(read, containing: offset(of: 1500) + 3, as: admin) == 1500)
            #expect(try await catalog.lineNumber(read, containing: offset(of: 2001), as: admin) == 2001)
            #expect(try await catalog.lineNumber(read, containing: offset(of: 2001) - 1, as: admin) == 2000)
            #expect(try await catalog.lineNumber(read, containing: Int64(log.count + 100), as: admin) == 2501)

            // The index grows with the log: "tail" ends, and a line follows.
            _ = try await setup.core.appendLog(session: setup.session, setup.append(at: log.count, Data(" end\nlast\n".utf8)))
            let grown = try await catalog.readLines(read, first: 2501, count: 5, as: admin)
            #expect(String(decoding: grown.data, as: UTF8.self) == "tail end\nlast\n" && grown.lines == 2502)
        }
    }

    @Test func searchesCoverTheWholeLogWithoutEscapes() async throws {
        try await TestDatabase.with(.sqlite) { database in
            let setup = try await DurabilityTests.Setup.make(database)
            _ = try await setup.writeLog(Self.log().pieces)
            let catalog = setup.core.catalog
            let read = LogRead(runID: setup.runID, job: "j", node: "n")
            // Plain text, any case, the colour codes inside the word left out.
            let failed = try await catalog.searchLog(read, LogSearch(text: "failed"), as: admin)
            #expect(failed.total == 25 && failed.lines.first == 100 && failed.lines.count == 25 && failed.searched == 2501)
            let after = try await catalog.searchLog(read, LogSearch(text: "FAILED", from: 1001, limit: 3), as: admin)
            #expect(after.total == 25 && after.lines == [1100, 1200, 1300])
            let before = try await catalog.searchLog(read, LogSearch(text: "failed", from: 1001, backward: true, limit: 2), as: admin)
            #expect(before.lines == [900, 1000])
            #expect(try await catalog.searchLog(read, LogSearch(text: "failed", caseSensitive: true), as: admin).total == 0)
            // A regular expression, line by line.
            let regex = try await catalog.searchLog(read, LogSearch(text: "^line 2[0-9]*5$", regex: true, limit: 1000), as: admin)
            #expect(regex.lines.first == 25 && regex.lines.contains(2495) && regex.lines.allSatisfy { $0 % 10 == 5 })
            #expect(try await catalog.searchLog(read, LogSearch(text: "^tail$", regex: true), as: admin).lines == [2501])
            await #expect(throws: CoordinatorError.self) { try await catalog.searchLog(read, LogSearch(text: "(", regex: true), as: admin) }
            await #expect(throws: CoordinatorError.self) { try await catalog.searchLog(read, LogSearch(text: ""), as: admin) }
            let viewer = Principal(name: "v", role: .viewer)
            #expect(try await catalog.searchLog(read, LogSearch(text: "tail"), as: viewer).total == 1)
        }
    }

    /// A log past its size limit: what is kept still reads by line, the dropped range ending
    /// the line before it.
    @Test func aLogWithADroppedMiddleStillReadsByLine() async throws {
        try await TestDatabase.with(.sqlite) { database in
            var limits = CoordinatorLimits()
            limits.maximumLogBytes = 64 * 1024
            let setup = try await DurabilityTests.Setup.make(database, limits: limits)
            var pieces: [Data] = []
            for block in 0..<40 {
                pieces.append(Data((0..<400).map { "b\(block) l\($0) xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" }.joined().utf8))
            }
            _ = try await setup.writeLog(pieces)
            let catalog = setup.core.catalog
            let read = LogRead(runID: setup.runID, job: "j", node: "n")
            let all = try await catalog.readLines(read, first: 1, count: 10_000, as: admin)
            #expect(!all.gaps.isEmpty, "the size limit dropped a middle")
            #expect(all.count == all.lines, "every line comes in one read: \(all.count) of \(all.lines)")
            let text = String(decoding: all.data, as: UTF8.self)
            #expect(text.hasPrefix("b0 l0 ") && text.hasSuffix("b39 l399 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"))
            let searched = try await catalog.searchLog(read, LogSearch(text: "b39 l399"), as: admin)
            #expect(searched.searched == all.lines && searched.lines == [all.lines])
        }
    }

    /// GitHub's groups and GitLab's sections, found however the log is cut into pieces.
    @Test func sectionsAreFoundInEitherForm() async throws {
        try await TestDatabase.with(.sqlite) { database in
            let setup = try await DurabilityTests.Setup.make(database)
            let text = """
                ::group::Install
                apt-get install
                ::endgroup::
                \u{1B}[0Ksection_start:1700000000:build[collapsed=true]\r\u{1B}[0KBuilding
                cc -c a.c
                \u{1B}[0Ksection_start:1700000001:link\r\u{1B}[0KLinking
                ld
                \u{1B}[0Ksection_end:1700000004:link\r\u{1B}[0K
                \u{1B}[0Ksection_end:1700000010:build\r\u{1B}[0K
                ::group::Tests
                still running

                """
            let bytes = Data(text.utf8)
            // Pieces of 7 bytes: every marker is cut somewhere.
            _ = try await setup.writeLog(stride(from: 0, to: bytes.count, by: 7).map { Data(bytes[$0..<min(bytes.count, $0 + 7)]) })
            let read = LogRead(runID: setup.runID, job: "j", node: "n")
            let (sections, lines) = try await setup.core.catalog.logSections(read, as: admin)
            #expect(lines == 11)
            #expect(sections.map(\.name) == ["Install", "build", "link", "Tests"])
            #expect(sections.map(\.start) == [1, 4, 6, 10] && sections.map(\.end) == [3, 9, 8, nil])
            #expect(sections.map(\.collapsed) == [true, true, false, true])
            #expect(sections[1].durationMs == 10_000 && sections[2].durationMs == 3_000)
        }
    }
}
