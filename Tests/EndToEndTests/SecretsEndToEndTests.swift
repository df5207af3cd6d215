import Foundation
import Wire
import TestSupport
import Testing

/// Secrets through the CLI, the coordinator and both runners: set from standard input, given
/// to the node that names them, masked in every node's log (also a value split across the
/// runner's reads), listed by name only.
@Suite(.serialized) struct SecretsEndToEndTests {
    @Test(arguments: RunnerUnderTest.all) func aNodeGetsItsSecretAndEveryLogShowsStars(runner: RunnerUnderTest) async throws {
        let (keys, key) = try Fabric.secretsKey()
        defer { keys.remove() }
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], capacity: 1,
                                      coordinatorArguments: ["--secrets-key-file", key])
        do {
            try await fabric.push("deploy.act", """
                name: deploy
                jobs:
                  ship:
                    labels: [linux]
                    nodes:
                      use:
                        secrets: [DEPLOY_TOKEN]
                        run: |
                          printf '%s' "$DEPLOY_TOKEN" | sha256sum | cut -c1-16
                          echo "whole: $DEPLOY_TOKEN."
                          printf 'split: '; printf '%s' "$DEPLOY_TOKEN" | head -c 5; sleep 0.3; printf '%s' "$DEPLOY_TOKEN" | tail -c +6; echo .
                          printf '%s' "$DEPLOY_TOKEN" > token.txt
                          printf 'ends with the start of it: '; printf '%s' "$DEPLOY_TOKEN" | head -c 3
                      other:
                        needs: [use]
                        run: 'echo "other reads: $(cat token.txt), env: ${DEPLOY_TOKEN:-unset}"'
                """)
            let value = "tok-\(UUID().uuidString)"
            let input = fabric.root.file("value")
            try "\(value)\n".write(toFile: input, atomically: true, encoding: .utf8)
            let set = try await fabric.heddle(["secrets", "set", "shop", "DEPLOY_TOKEN"], input: input)
            #expect(set.status == 0 && set.output == "secret DEPLOY_TOKEN of shop set (\(value.utf8.count) bytes, sealed)\n", "\(set)")
            // Automation may list names, not set values.
            let refused = try await fabric.heddle(["secrets", "set", "shop", "OTHER"], as: "bot", input: input)
            #expect(refused.status != 0 && refused.error.contains("needs the admin role"), "\(refused.error)")
            let listed = try await fabric.heddle(["secrets", "list", "shop", "--json"], as: "bot")
            #expect(listed.output.contains("\"DEPLOY_TOKEN\"") && !listed.output.contains(value), "\(listed.output)")

            let id = try await fabric.trigger("shop/deploy")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let use = try await fabric.heddle(["logs", String(id), "--job", "ship", "--node", "use"]).output
            let digest = sha256Hex(Array(value.utf8)).prefix(16)
            #expect(use.contains("\(digest)\n"), "the node had the value: \(use)")
            #expect(use.contains("whole: ***.\n") && use.contains("split: ***.\n"), "\(use)")
            #expect(use.contains("ends with the start of it: \(value.prefix(3))"), "a start held back goes out at the end: \(use)")
            #expect(!use.contains(value))
            let other = try await fabric.heddle(["logs", String(id), "--job", "ship", "--node", "other"]).output
            #expect(other.contains("other reads: ***, env: unset\n"), "masked in the job's other nodes; not given to them: \(other)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}
