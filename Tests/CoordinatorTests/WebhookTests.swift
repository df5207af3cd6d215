import Foundation
import Testing
import Wire
@testable import Coordinator

/// Which branches `on:` matches.
@Suite struct WebhookTests {
    @Test func branchGlobsMatchAsTheirSegmentsSay() {
        #expect(Triggers.matches("main", ["main"]))
        #expect(!Triggers.matches("main2", ["main"]))
        #expect(Triggers.matches("release/1.0", ["release/*"]))
        #expect(!Triggers.matches("release/1.0/hotfix", ["release/*"]))
        #expect(Triggers.matches("release/1.0/hotfix", ["release/**"]))
        #expect(Triggers.matches("anything/at/all", ["**"]))
        #expect(Triggers.matches("v1", ["v?"]) && !Triggers.matches("v/", ["v?"]))
        #expect(Triggers.matches("feature-x", ["main", "feature-*"]))
    }

    @Test func onSaysWhichEventsStartAPipeline() throws {
        let parsed = try ActParser(file: "ci.act").parse("""
            name: ci
            on:
              push: { branches: [main, "release/*"] }
              pull_request:
            jobs:
              test:
                nodes:
                  unit: { run: "true" }
            """)
        #expect(parsed.triggers == Triggers(push: ["main", "release/*"], pullRequest: ["**"]))
        let manual = try ActParser(file: "ci.act").parse("name: ci\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        #expect(manual.triggers == Triggers())
        #expect(throws: ActError.self) {
            try ActParser(file: "ci.act").parse("name: ci\non: { tag: {} }\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        }
        #expect(throws: ActError.self) {
            try ActParser(file: "ci.act").parse("name: ci\non: { push: { branches: [] } }\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        }
    }
}
