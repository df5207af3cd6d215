import Testing
import Wire
@testable import Coordinator

@Suite struct ActParserTests {
    let parser = ActParser(file: "ci.act")

    @Test func aValidPipelineParses() throws {
        let pipeline = try parser.parse("""
            name: build
            jobs:
              test:
                labels: [linux, x86]
                nodes:
                  fetch: { run: "echo fetching" }
                  build:
                    run: make
                    needs: [fetch]
                    env: { CC: clang }
                    timeout: 10m
                  report:
                    run: "make report > out/report.txt"
                    needs: build
                    artifacts: ["out/*.txt"]
            """)
        #expect(pipeline.name == "build")
        #expect(pipeline.jobs.map(\.name) == ["test"])
        let job = pipeline.jobs[0]
        #expect(job.labels == ["linux", "x86"])
        #expect(job.nodes.map(\.name) == ["fetch", "build", "report"])
        #expect(job.nodes[1].needs == ["fetch"])
        #expect(job.nodes[1].env == ["CC": "clang"])
        #expect(job.nodes[1].timeout == 600)
        #expect(job.nodes[2].needs == ["build"])
        #expect(job.nodes[2].artifacts == ["out/*.txt"])
    }

    /// `network: none` on a job cuts its nodes' network; a node may take it back (`host`).
    @Test func networkIsPerJobOrNode() throws {
        let pipeline = try parser.parse("""
            name: build
            jobs:
              offline:
                network: none
                nodes:
                  a: { run: x }
                  b: { run: y, network: host }
              online:
                nodes:
                  c: { run: z }
                  d: { run: w, network: none }
            """)
        #expect(pipeline.jobs[0].nodes.map(\.network) == [false, true])
        #expect(pipeline.jobs[1].nodes.map(\.network) == [true, false])
    }

    /// `limits:` on a job are its nodes' unless a node sets its own (each limit separately).
    @Test func limitsArePerJobOrNode() throws {
        let pipeline = try parser.parse("""
            name: build
            jobs:
              test:
                limits: { memory: 2G, cpus: 2 }
                nodes:
                  a: { run: x }
                  b: { run: y, limits: { memory: 64M, pids: 100 } }
            """)
        let nodes = pipeline.jobs[0].nodes
        #expect(nodes[0].limits == ResourceLimits(memory: 2 << 30, cpuMillis: 2000))
        #expect(nodes[1].limits == ResourceLimits(memory: 64 << 20, cpuMillis: 2000, pids: 100))
        #expect(try ResourceLimits.parse("memory=512M, cpus=0.5,pids=10") == ResourceLimits(memory: 512 << 20, cpuMillis: 500, pids: 10))
        #expect(ResourceLimits.size(64 << 20) == "64M" && ResourceLimits.size(1536 << 20) == "1536M")
        #expect(throws: LimitError.self) { try ResourceLimits.parse("memory=1K") }
        #expect(throws: LimitError.self) { try ResourceLimits.parse("disk=1G") }
    }

    @Test func secretsAndImagesArePerJobOrNode() throws {
        let pipeline = try parser.parse("""
            name: build
            jobs:
              test:
                secrets: [NPM_TOKEN]
                image: registry.example.com/team/builder:3
                nodes:
                  a: { run: x }
                  b: { run: y, secrets: [DEPLOY_KEY, NPM_TOKEN], image: "debian@sha256:0123abcd" }
            """)
        let nodes = pipeline.jobs[0].nodes
        #expect(nodes.map(\.secrets) == [["NPM_TOKEN"], ["DEPLOY_KEY", "NPM_TOKEN"]])
        #expect(nodes.map(\.image) == ["registry.example.com/team/builder:3", "debian@sha256:0123abcd"])
        let bad: [(String, String)] = [
            ("secrets: [npm_token]", "must be an environment variable's name"),
            ("secrets: [HEDDLE_X]", "may not start with HEDDLE_"),
            ("image: 'a b'", "write an image reference"),
            ("image: -x", "write an image reference"),
        ]
        for (line, message) in bad {
            #expect(throws: ActError.self, "\(line)") {
                try parser.parse("name: b\njobs:\n  t:\n    \(line)\n    nodes:\n      n: { run: x }\n")
            }
            do {
                _ = try parser.parse("name: b\njobs:\n  t:\n    \(line)\n    nodes:\n      n: { run: x }\n")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
        #expect(throws: ActError.self) {
            try parser.parse("name: b\njobs:\n  t:\n    nodes:\n      n: { run: x, env: { TOKEN: a }, secrets: [TOKEN] }\n")
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var source: String
        var line: Int
        var message: String
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "bad YAML", source: "name: build\njobs:\n  test: [unclosed\n", line: 4, message: "not valid YAML"),
        Case(name: "unknown key", source: """
            name: build
            jobs:
              test:
                lables: [linux]
                nodes:
                  a: { run: "true" }
            """, line: 4, message: "unknown key 'lables'"),
        Case(name: "unknown needs", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: "true" }
                  b:
                    run: "true"
                    needs: [c]
            """, line: 8, message: "needs 'c'"),
        Case(name: "cycle", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: "true", needs: [c] }
                  b: { run: "true", needs: [a] }
                  c: { run: "true", needs: [b] }
            """, line: 5, message: "cycle: a -> c -> b -> a"),
        Case(name: "job with no nodes", source: """
            name: build
            jobs:
              test:
                labels: [linux]
            """, line: 3, message: "job 'test' has no nodes"),
        Case(name: "empty nodes", source: """
            name: build
            jobs:
              test:
                nodes: {}
            """, line: 4, message: "job 'test' has no nodes"),
        Case(name: "node without run", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { needs: [] }
            """, line: 5, message: "has no `run`"),
        Case(name: "missing name", source: "jobs:\n  t:\n    nodes:\n      a: { run: x }\n", line: 1, message: "missing `name`"),
        Case(name: "bad timeout", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: x, timeout: soon }
            """, line: 5, message: "`timeout`"),
        Case(name: "artifact escaping the workspace", source: """
            name: build
            jobs:
              test:
                nodes:
                  a:
                    run: x
                    artifacts: ["../secret"]
            """, line: 7, message: "relative path"),
        Case(name: "duplicate node", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: x }
                  a: { run: y }
            """, line: 5, message: "'a' appears twice"),
        Case(name: "bad limit", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: x, limits: { memory: lots } }
            """, line: 5, message: "memory limit 'lots' is not a size of at least 4M (bytes, or with K, M, G or T: 512M, 2G) (in node 'a' of job 'test')"),
        Case(name: "bad network", source: """
            name: build
            jobs:
              test:
                nodes:
                  a: { run: x, network: off }
            """, line: 5, message: "`network` of node 'a' of job 'test' is 'off'; write none (no network but loopback) or host"),
        Case(name: "input name", source: "name: b\ninputs:\n  9lives: { default: a }\njobs:\n  t:\n    nodes:\n      a: { run: x }\n", line: 3,
             message: "input name '9lives' must start with a letter and have only letters, digits and _ (at most 64)"),
        Case(name: "inputs alike in capitals", source: "name: b\ninputs:\n  env:\n  ENV:\njobs:\n  t:\n    nodes:\n      a: { run: x }\n", line: 4,
             message: "inputs 'env' and 'ENV' would both be HEDDLE_INPUT_ENV; rename one"),
        Case(name: "default not an option", source: "name: b\ninputs:\n  t: { default: c, options: [a, b] }\njobs:\n  t:\n    nodes:\n      a: { run: x }\n",
             line: 3, message: "the default of input 't', 'c', is not among its options (a, b)"),
        Case(name: "unknown input key", source: "name: b\ninputs:\n  t: { choices: [a] }\njobs:\n  t:\n    nodes:\n      a: { run: x }\n", line: 3,
             message: "unknown key 'choices' in input 't' (expected default, options, description)"),
        Case(name: "empty options", source: "name: b\ninputs:\n  t: { options: [] }\njobs:\n  t:\n    nodes:\n      a: { run: x }\n", line: 3,
             message: "`options` of input 't' is empty; leave it out to take any value"),
        Case(name: "required input of a forge-started pipeline", source: "name: b\non: { push: }\ninputs:\n  t:\njobs:\n  t:\n    nodes:\n      a: { run: x }\n",
             line: 2, message: "input 't' has no default, and `on:` starts this pipeline from a forge's events or a schedule, which set no inputs; give it a `default`"),
    ]

    /// A matrix: every combination in declaration order, less `exclude`, plus `include`; each
    /// instance named by its values, with its variables and its labels.
    @Test func aMatrixJobIsOneJobPerCombination() throws {
        let pipeline = try parser.parse("""
            name: m
            jobs:
              test:
                matrix: { os: [debian, alpine], py: ["3.11", "3.12"], exclude: [{ py: "3.11" }], include: [{ os: fedora, py: "4" }] }
                labels: [linux, "${matrix.os}", "py-${matrix.py}"]
                image: "${matrix.os}:latest"
                nodes:
                  a: { run: x }
                  b: { run: y, env: { HEDDLE_MATRIX_PY: mine } }
            """)
        #expect(pipeline.jobs.map(\.name) == ["test (debian, 3.12)", "test (alpine, 3.12)", "test (fedora, 4)"])
        #expect(pipeline.jobs.map(\.labels) == [["linux", "debian", "py-3.12"], ["linux", "alpine", "py-3.12"], ["linux", "fedora", "py-4"]])
        #expect(pipeline.jobs[1].matrix == ["os": "alpine", "py": "3.12"])
        #expect(pipeline.jobs[1].nodes[0].env == ["HEDDLE_MATRIX_OS": "alpine", "HEDDLE_MATRIX_PY": "3.12"])
        #expect(pipeline.jobs[1].nodes[1].env["HEDDLE_MATRIX_PY"] == "mine", "a node's own variable wins")
        #expect(pipeline.jobs[2].nodes[0].image == "fedora:latest")
    }

    static let matrixCases: [Case] = [
        Case(name: "axis without values", source: "name: m\njobs:\n  t:\n    matrix: { os: [] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "axis 'os' of `matrix` of job 't' has no values"),
        Case(name: "unknown axis in exclude", source: "name: m\njobs:\n  t:\n    matrix: { os: [a], exclude: [{ py: b }] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "`exclude` of `matrix` of job 't' names axis 'py', which the matrix does not have (axes: os)"),
        Case(name: "everything excluded", source: "name: m\njobs:\n  t:\n    matrix: { os: [a], exclude: [{ os: a }] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "`matrix` of job 't' excludes every combination"),
        Case(name: "include missing an axis", source: "name: m\njobs:\n  t:\n    matrix: { os: [a], py: [b], include: [{ os: c }] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "an entry of `include` of `matrix` of job 't' must set every axis (os, py)"),
        Case(name: "unknown axis in a label", source: "name: m\njobs:\n  t:\n    matrix: { os: [a] }\n    labels: [\"${matrix.cpu}\"]\n    nodes: { a: { run: x } }\n",
             line: 5, message: "`labels` of job 't (a)' uses ${matrix.cpu}, which is not an axis of the matrix (axes: os)"),
        Case(name: "matrix variable without a matrix", source: "name: m\njobs:\n  t:\n    labels: [\"${matrix.os}\"]\n    nodes: { a: { run: x } }\n",
             line: 4, message: "`labels` of job 't' uses ${matrix.os} but its job has no `matrix`"),
        Case(name: "too many jobs", source: "name: m\njobs:\n  t:\n    matrix: { a: [\(Array(0..<20).map(String.init).joined(separator: ", "))], b: [\(Array(0..<20).map(String.init).joined(separator: ", "))] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "`matrix` of job 't' makes more than 256 jobs"),
        Case(name: "matrix value not a name", source: "name: m\njobs:\n  t:\n    matrix: { os: [\"a b\"] }\n    nodes: { a: { run: x } }\n",
             line: 4, message: "matrix value"),
    ]

    @Test(arguments: matrixCases)
    func matrixErrorsNameTheLineAndProblem(_ testCase: Case) {
        do {
            _ = try parser.parse(testCase.source)
            Issue.record("\(testCase.name) parsed without error")
        } catch {
            #expect(error.line == testCase.line, "\(error)")
            #expect(error.message.contains(testCase.message), "\(error)")
        }
    }

    /// Inputs: declared in order, required without a default; resolved against what a trigger
    /// sets (defaults filled in, unknown ones, values not among the options and missing
    /// required ones refused).
    @Test func inputsAreDeclaredAndResolved() throws {
        let pipeline = try parser.parse("""
            name: deploy
            inputs:
              target: { default: staging, options: [staging, prod], description: Where }
              version:
              note: { default: "" }
            jobs:
              t: { nodes: { a: { run: x } } }
            """)
        #expect(pipeline.inputs == [InputDefinition(name: "target", defaultValue: "staging", options: ["staging", "prod"], description: "Where"),
                                    InputDefinition(name: "version"), InputDefinition(name: "note", defaultValue: "")])
        #expect(pipeline.inputs[2].environmentName == "HEDDLE_INPUT_NOTE")
        #expect(try pipeline.resolveInputs(["version": "1"]) == ["target": "staging", "version": "1", "note": ""])
        #expect(try pipeline.resolveInputs(["version": "1", "target": "prod"]) == ["target": "prod", "version": "1", "note": ""])
        #expect(throws: InputError("input 'version' of pipeline 'deploy' is required: set it (--input version=VALUE)")) {
            try pipeline.resolveInputs([:])
        }
        #expect(throws: InputError("input 'target' is 'moon'; it must be one of: staging, prod")) {
            try pipeline.resolveInputs(["version": "1", "target": "moon"])
        }
        #expect(throws: InputError("pipeline 'deploy' has no input 'x' (its inputs: target, version, note)")) {
            try pipeline.resolveInputs(["version": "1", "x": "y"])
        }
        #expect(throws: InputError("the value of input 'version' must have at most 4096 bytes")) {
            try pipeline.resolveInputs(["version": String(repeating: "v", count: 4097)])
        }
        let plain = try parser.parse("name: p\njobs:\n  t: { nodes: { a: { run: x } } }\n")
        #expect(throws: InputError("pipeline 'p' has no inputs; 'x' is not one")) { try plain.resolveInputs(["x": "1"]) }
        #expect(try plain.resolveInputs([:]) == [:])
    }

    @Test(arguments: cases)
    func errorsNameTheFileLineAndProblem(_ testCase: Case) {
        do {
            _ = try parser.parse(testCase.source)
            Issue.record("\(testCase.name) parsed without error")
        } catch {
            #expect(error.file == "ci.act")
            #expect(error.line == testCase.line, "\(error)")
            #expect(error.message.contains(testCase.message), "\(error)")
            #expect(error.description.hasPrefix("ci.act:\(testCase.line): "))
        }
    }
}
