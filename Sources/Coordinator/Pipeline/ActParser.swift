import Foundation
import Wire
import Yams

/// A problem in a `.act` file, with where it is.
public struct ActError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int
    public var message: String

    public var description: String { "\(file):\(line): \(message)" }
}

/// Parses `.act` YAML:
///
/// ```yaml
/// name: build
/// jobs:
///   test:
///     labels: [linux]
///     nodes:
///       fetch: { run: "echo fetching" }
///       build: { run: make, needs: [fetch], env: {CC: clang}, timeout: 10m, grace: 30s, artifacts: ["out/*"] }
/// ```
public struct ActParser {
    public var file: String
    /// The matrix values of the job instance being parsed (axis, value), in axis order; empty
    /// outside a matrix job.
    private var matrix: [(axis: String, value: String)] = []

    public init(file: String) {
        self.file = file
    }



    public func parse(_ source: String) throws(ActError) -> PipelineDefinition {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: source) else {
                throw error(at: 1, "the file is empty; a pipeline needs `name` and `jobs`")
            }
            root = node
        } catch let error as ActError {
            throw error
        } catch let error as YamlError {
            throw yamlError(error)
        } catch {
            throw self.error(at: 1, "not valid YAML: \(error)")
        }
        let top = try mapping(root, "the pipeline")
        try checkKeys(top, allowed: ["name", "on", "inputs", "jobs"], in: "the pipeline")
        guard let nameNode = value(top, "name") else {
            throw error(at: line(root), "missing `name` (the pipeline's name)")
        }
        let name = try identifier(nameNode, "the pipeline name")
        guard let jobsNode = value(top, "jobs") else {
            throw error(at: line(root), "missing `jobs`")
        }
        let jobsMap = try mapping(jobsNode, "`jobs`")
        guard !jobsMap.isEmpty else { throw error(at: line(jobsNode), "`jobs` is empty; a pipeline needs at least one job") }
        var jobs: [JobDefinition] = []
        for (key, jobNode) in jobsMap {
            let jobName = try identifier(key, "a job name")
            // A job with `matrix:` is one job per combination of its values, named
            // `NAME (v1, v2)`.
            if case .mapping(let map) = jobNode, let matrixNode = value(map, "matrix") {
                for combination in try parseMatrix(matrixNode, job: jobName) {
                    var instance = self
                    instance.matrix = combination
                    let instanceName = "\(jobName) (\(combination.map(\.value).joined(separator: ", ")))"
                    jobs.append(try instance.parseJob(name: instanceName, keyNode: key, jobNode))
                }
            } else {
                jobs.append(try parseJob(name: jobName, keyNode: key, jobNode))
            }
        }
        // Names stay unique: YAML keys are, a plain job name has no " (", and one matrix's
        // combinations are distinct.
        var definition = PipelineDefinition(name: name, jobs: jobs)
        if let on = value(top, "on") { definition.triggers = try parseTriggers(on) }
        if let inputs = value(top, "inputs") {
            definition.inputs = try parseInputs(inputs)
            // A forge's delivery sets no inputs: those of a pipeline it starts need defaults.
            if let on = value(top, "on"), let required = definition.inputs.first(where: { $0.defaultValue == nil }) {
                throw error(at: line(on), "input '\(required.name)' has no default, and `on:` starts this pipeline from a forge's events or a schedule, which set no inputs; give it a `default`")
            }
        }
        return definition
    }

    /// `inputs: { target: { default: staging, options: [staging, prod], description: "..." } }`;
    /// an input without `default` is required.
    private func parseInputs(_ node: Node) throws(ActError) -> [InputDefinition] {
        let map = try mapping(node, "`inputs`")
        guard map.count <= InputDefinition.maximumCount else {
            throw error(at: line(node), "`inputs` declares \(map.count) inputs; at most \(InputDefinition.maximumCount)")
        }
        var inputs: [InputDefinition] = []
        var upper: [String: String] = [:]
        for (key, inputNode) in map {
            let name = try scalar(key, "an input name")
            if let problem = InputDefinition.nameProblem(name) { throw error(at: line(key), problem) }
            if let other = upper.updateValue(name, forKey: name.uppercased()) {
                throw error(at: line(key), "inputs '\(other)' and '\(name)' would both be HEDDLE_INPUT_\(name.uppercased()); rename one")
            }
            var input = InputDefinition(name: name)
            let what = "input '\(name)'"
            if case .scalar(let scalar) = inputNode, ["", "~", "null"].contains(scalar.string) {
                inputs.append(input)  // `name:` alone: required, any value
                continue
            }
            let settings = try mapping(inputNode, what)
            try checkKeys(settings, allowed: ["default", "options", "description"], in: what)
            if let defaultNode = value(settings, "default") {
                let text = try scalar(defaultNode, "`default` of \(what)")
                if let problem = InputDefinition.valueProblem(text) {
                    throw error(at: line(defaultNode), "`default` of \(what) must have \(problem)")
                }
                input.defaultValue = text
            }
            if let optionsNode = value(settings, "options") {
                input.options = try stringList(optionsNode, "`options` of \(what)")
                guard !input.options.isEmpty else {
                    throw error(at: line(optionsNode), "`options` of \(what) is empty; leave it out to take any value")
                }
                for option in input.options {
                    if let problem = InputDefinition.valueProblem(option) {
                        throw error(at: line(optionsNode), "an option of \(what) must have \(problem)")
                    }
                }
                if let defaultValue = input.defaultValue, !input.options.contains(defaultValue) {
                    throw error(at: line(optionsNode), "the default of \(what), '\(defaultValue.prefix(70))', is not among its options (\(input.options.joined(separator: ", ")))")
                }
            }
            if let descriptionNode = value(settings, "description") {
                input.description = String(try scalar(descriptionNode, "`description` of \(what)").prefix(1000))
            }
            inputs.append(input)
        }
        return inputs
    }

    /// `on: { push: { branches: [main, "release/*"] }, pull_request: { branches: [main] } }`;
    /// an event without `branches` (or with `push:` alone) matches every branch.
    private func parseTriggers(_ node: Node) throws(ActError) -> Triggers {
        let map = try mapping(node, "`on`")
        try checkKeys(map, allowed: ["push", "pull_request", "schedule"], in: "`on`")
        var triggers = Triggers()
        for (key, eventNode) in map {
            let event = key.string ?? ""
            if event == "schedule" {
                triggers.schedules = try parseSchedules(eventNode)
                continue
            }
            var branches = ["**"]
            if case .mapping = eventNode {
                let eventMap = try mapping(eventNode, "`on.\(event)`")
                try checkKeys(eventMap, allowed: ["branches"], in: "`on.\(event)`")
                if let branchesNode = value(eventMap, "branches") {
                    branches = try stringList(branchesNode, "`on.\(event).branches`")
                    guard !branches.isEmpty else {
                        throw error(at: line(branchesNode), "`on.\(event).branches` is empty; leave `branches` out to match every branch")
                    }
                    for pattern in branches where pattern.isEmpty || pattern.utf8.count > 255 || pattern.contains(where: { $0.isNewline })
                        || pattern.filter({ $0 == "*" }).count > 8 {
                        throw error(at: line(branchesNode), "a branch pattern in `on.\(event).branches` has 1 to 255 characters on one line and at most 8 '*'")
                    }
                }
            } else if case .scalar(let scalar) = eventNode, scalar.string.isEmpty || scalar.string == "~" || scalar.string == "null" {
                // `push:` alone: every branch.
            } else {
                throw error(at: line(eventNode), "`on.\(event)` must be a mapping with `branches`, like { branches: [main] }")
            }
            if event == "push" { triggers.push = branches } else { triggers.pullRequest = branches }
        }
        return triggers
    }

    /// `schedule: [ { cron: "0 3 * * 1-5", branch: main, timezone: Europe/Berlin } ]`: at most
    /// `Schedule.maximumCount` entries, none twice.
    private func parseSchedules(_ node: Node) throws(ActError) -> [Schedule] {
        guard case .sequence(let entries) = node, !entries.isEmpty else {
            throw error(at: line(node), "`on.schedule` must be a list of entries like { cron: \"0 3 * * 1-5\", branch: main }")
        }
        guard entries.count <= Schedule.maximumCount else {
            throw error(at: line(node), "`on.schedule` has \(entries.count) entries; at most \(Schedule.maximumCount)")
        }
        var schedules: [Schedule] = []
        for entry in entries {
            let what = "an entry of `on.schedule`"
            let map = try mapping(entry, what)
            try checkKeys(map, allowed: ["cron", "branch", "timezone"], in: what)
            guard let cronNode = value(map, "cron") else {
                throw error(at: line(entry), "\(what) has no `cron`, like cron: \"0 3 * * 1-5\"")
            }
            let text = try scalar(cronNode, "`cron`")
            let cron: CronExpression
            do throws(CronError) {
                cron = try CronExpression(text)
            } catch {
                throw self.error(at: line(cronNode), "`cron`: \(error.message)")
            }
            var schedule = Schedule(cron: cron)
            if let zoneNode = value(map, "timezone") {
                let zone = try scalar(zoneNode, "`timezone`")
                guard zone.utf8.count <= 64, zone.allSatisfy({ $0.isASCII && !$0.isWhitespace }), TimeZone(identifier: zone) != nil else {
                    throw error(at: line(zoneNode), "`timezone` '\(zone)' is not an IANA time zone name, like UTC or Europe/Berlin")
                }
                schedule.timeZone = zone
            }
            if let branchNode = value(map, "branch") {
                let branch = try scalar(branchNode, "`branch`")
                if let problem = Names.branchProblem(branch) { throw error(at: line(branchNode), "`branch`: \(problem)") }
                schedule.branch = branch
            }
            guard cron.next(after: Date(), in: schedule.zone) != nil else {
                throw error(at: line(cronNode), "`cron` '\(cron.description)' is never due (no such day in the next nine years)")
            }
            if schedules.contains(where: { $0.key == schedule.key }) {
                throw error(at: line(entry), "`on.schedule` has '\(cron.description)' on \(schedule.branch) in \(schedule.timeZone) twice")
            }
            schedules.append(schedule)
        }
        return schedules
    }

    /// `matrix: { os: [debian, alpine], py: ["3.11", "3.12"], exclude: [{os: alpine, py: "3.11"}],
    /// include: [{os: fedora, py: "3.13"}] }`: every combination of the axes' values in
    /// declaration order, less those an `exclude` entry matches (all its keys), then each
    /// `include` entry (setting every axis) not already there.
    private func parseMatrix(_ node: Node, job: String) throws(ActError) -> [[(axis: String, value: String)]] {
        let what = "`matrix` of job '\(job)'"
        let map = try mapping(node, what)
        var axes: [(name: String, values: [String])] = []
        for (key, valuesNode) in map {
            let axis = key.string ?? ""
            if axis == "include" || axis == "exclude" { continue }
            if let problem = InputDefinition.nameProblem(axis, noun: "matrix axis") { throw error(at: line(key), problem) }
            let values = try stringList(valuesNode, "axis '\(axis)' of \(what)")
            guard !values.isEmpty else { throw error(at: line(valuesNode), "axis '\(axis)' of \(what) has no values") }
            for value in values {
                if let problem = Names.problem(value, "matrix value") { throw error(at: line(valuesNode), "\(problem) (in \(what))") }
            }
            guard Set(values).count == values.count else { throw error(at: line(valuesNode), "axis '\(axis)' of \(what) repeats a value") }
            if let other = axes.first(where: { $0.name.uppercased() == axis.uppercased() }) {
                throw error(at: line(key), "axes '\(other.name)' and '\(axis)' of \(what) would both be HEDDLE_MATRIX_\(axis.uppercased()); rename one")
            }
            axes.append((axis, values))
        }
        guard !axes.isEmpty else { throw error(at: line(node), "\(what) has no axes; write for example { os: [debian, alpine] }") }
        guard axes.count <= 8 else { throw error(at: line(node), "\(what) has \(axes.count) axes; at most 8") }
        var combinations: [[(axis: String, value: String)]] = [[]]
        for axis in axes {
            combinations = combinations.flatMap { partial in axis.values.map { partial + [(axis.name, $0)] } }
            guard combinations.count <= 256 else { throw error(at: line(node), "\(what) makes more than 256 jobs") }
        }
        /// An `include`/`exclude` entry as axis → value (only the matrix's axes).
        func entries(_ key: String) throws(ActError) -> [(line: Int, values: [String: String])] {
            guard let listNode = value(map, key) else { return [] }
            guard case .sequence(let sequence) = listNode else {
                throw error(at: line(listNode), "`\(key)` of \(what) must be a list of mappings, like [{os: alpine}]")
            }
            var out: [(Int, [String: String])] = []
            for item in sequence {
                var values: [String: String] = [:]
                for (axisNode, valueNode) in try mapping(item, "an entry of `\(key)` of \(what)") {
                    let axis = axisNode.string ?? ""
                    guard axes.contains(where: { $0.name == axis }) else {
                        throw error(at: line(axisNode), "`\(key)` of \(what) names axis '\(axis)', which the matrix does not have (axes: \(axes.map(\.name).joined(separator: ", ")))")
                    }
                    let text = try scalar(valueNode, "a value in `\(key)` of \(what)")
                    if let problem = Names.problem(text, "matrix value") { throw error(at: line(valueNode), "\(problem) (in \(what))") }
                    values[axis] = text
                }
                out.append((line(item), values))
            }
            return out
        }
        for exclude in try entries("exclude") {
            combinations.removeAll { combination in exclude.values.allSatisfy { axis, value in combination.contains { $0 == (axis, value) } } }
        }
        for include in try entries("include") {
            guard include.values.count == axes.count else {
                throw error(at: include.line, "an entry of `include` of \(what) must set every axis (\(axes.map(\.name).joined(separator: ", ")))")
            }
            let combination = axes.map { (axis: $0.name, value: include.values[$0.name]!) }
            if !combinations.contains(where: { $0.map(\.value) == combination.map(\.value) }) { combinations.append(combination) }
        }
        guard !combinations.isEmpty else { throw error(at: line(node), "\(what) excludes every combination") }
        guard combinations.count <= 256 else { throw error(at: line(node), "\(what) makes more than 256 jobs") }
        return combinations
    }

    /// `text` with each `${matrix.AXIS}` replaced by this instance's value.
    private func substituted(_ text: String, at node: Node, _ what: String) throws(ActError) -> String {
        guard text.contains("${matrix.") else { return text }
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${matrix.") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw error(at: line(node), "\(what) has `${matrix.` without its closing `}`")
            }
            let axis = String(rest[start.upperBound..<end])
            guard let value = matrix.first(where: { $0.axis == axis })?.value else {
                throw error(at: line(node), matrix.isEmpty
                    ? "\(what) uses ${matrix.\(axis)} but its job has no `matrix`"
                    : "\(what) uses ${matrix.\(axis)}, which is not an axis of the matrix (axes: \(matrix.map(\.axis).joined(separator: ", ")))")
            }
            out += value
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    private func parseJob(name: String, keyNode: Node, _ node: Node) throws(ActError) -> JobDefinition {
        let map = try mapping(node, "job '\(name)'")
        try checkKeys(map, allowed: ["labels", "nodes", "retry", "network", "limits", "secrets", "image", "matrix", "cache"],
                      in: "job '\(name)'")
        // The job's `image`: its nodes' unless a node names its own.
        let image = try imageSetting(map, "job '\(name)'") ?? ""
        // The job's `secrets`: every node's, with the node's own.
        let secrets = try secretsSetting(map, "job '\(name)'")
        // The job's `limits`: its nodes' unless a node sets its own.
        let limits = try limitsSetting(map, "job '\(name)'")
        // The job's `network`: its nodes' unless a node says otherwise.
        let network = try networkSetting(map, "job '\(name)'") ?? true
        var retryLost = 0
        if let retryNode = value(map, "retry") {
            let retry = try mapping(retryNode, "`retry` of job '\(name)'")
            try checkKeys(retry, allowed: ["lost"], in: "`retry` of job '\(name)'")
            if let lostNode = value(retry, "lost") {
                let text = try scalar(lostNode, "`retry.lost` of job '\(name)'")
                guard let count = Int(text), (0...100).contains(count) else {
                    throw error(at: line(lostNode), "`retry.lost` of job '\(name)' must be a number from 0 to 100, not '\(text)'")
                }
                retryLost = count
            }
        }
        var labels: [String] = []
        if let labelsNode = value(map, "labels") {
            labels = try stringList(labelsNode, "`labels` of job '\(name)'")
            for index in labels.indices { labels[index] = try substituted(labels[index], at: labelsNode, "`labels` of job '\(name)'") }
            for label in labels {
                if let problem = Names.problem(label, "label") { throw error(at: line(labelsNode), "\(problem) (in job '\(name)')") }
            }
            for label in labels where label.isEmpty || label.contains(",") || label.contains(" ") {
                throw error(at: line(labelsNode), "label '\(label)' of job '\(name)' must be a non-empty word without commas or spaces")
            }
        }
        guard let nodesNode = value(map, "nodes") else {
            throw error(at: line(keyNode), "job '\(name)' has no nodes; add `nodes:` with at least one node")
        }
        let nodesMap = try mapping(nodesNode, "`nodes` of job '\(name)'")
        guard !nodesMap.isEmpty else {
            throw error(at: line(nodesNode), "job '\(name)' has no nodes; add at least one under `nodes:`")
        }
        var nodes: [NodeDefinition] = []
        var nodeLines: [String: Int] = [:]
        var needsLines: [String: Int] = [:]
        for (key, nodeNode) in nodesMap {
            let nodeName = try identifier(key, "a node name")
            nodeLines[nodeName] = line(key)
            let parsed = try parseNode(name: nodeName, job: name, nodeNode, network: network, limits: limits,
                                   secrets: secrets, image: image)
            needsLines[nodeName] = parsed.needsLine ?? line(key)
            nodes.append(parsed.node)
        }
        let known = Set(nodes.map(\.name))
        for node in nodes {
            for need in node.needs where !known.contains(need) {
                throw error(at: needsLines[node.name] ?? 1,
                            "node '\(node.name)' of job '\(name)' needs '\(need)', which is not a node of that job (nodes: \(nodes.map(\.name).joined(separator: ", ")))")
            }
        }
        if let cycle = findCycle(nodes) {
            throw error(at: nodeLines[cycle[0]] ?? 1,
                        "the needs of job '\(name)' form a cycle: \(cycle.joined(separator: " -> "))")
        }
        // A matrix job's instance: each node sees its values as HEDDLE_MATRIX_<AXIS> (unless it
        // sets that variable itself).
        for index in nodes.indices {
            for (axis, value) in matrix where nodes[index].env["HEDDLE_MATRIX_" + axis.uppercased()] == nil {
                nodes[index].env["HEDDLE_MATRIX_" + axis.uppercased()] = value
            }
        }
        var job = JobDefinition(name: name, labels: labels, retryLost: retryLost, nodes: nodes)
        job.matrix = Dictionary(uniqueKeysWithValues: matrix.map { ($0.axis, $0.value) })
        if let cacheNode = value(map, "cache") { job.cache = try parseCache(cacheNode, job: name) }
        return job
    }

    /// `cache: { key: "deps-${hash:package-lock.json}", paths: [node_modules/], restore_keys: [deps-] }`.
    private func parseCache(_ node: Node, job: String) throws(ActError) -> CacheDefinition {
        let what = "`cache` of job '\(job)'"
        let map = try mapping(node, what)
        try checkKeys(map, allowed: ["key", "paths", "restore_keys"], in: what)
        guard let keyNode = value(map, "key") else {
            throw error(at: line(node), "\(what) has no `key`, like key: \"deps-${hash:package-lock.json}\"")
        }
        let key = try substituted(try scalar(keyNode, "`key` of \(what)"), at: keyNode, "`key` of \(what)")
        if let problem = CacheDefinition.keyProblem(key, "`key` of \(what)") { throw error(at: line(keyNode), problem) }
        guard let pathsNode = value(map, "paths") else {
            throw error(at: line(node), "\(what) has no `paths`, like paths: [node_modules/]")
        }
        let paths = try stringList(pathsNode, "`paths` of \(what)")
        guard (1...CacheDefinition.maximumPaths).contains(paths.count) else {
            throw error(at: line(pathsNode), "`paths` of \(what) lists 1 to \(CacheDefinition.maximumPaths) paths")
        }
        for path in paths {
            if let problem = CacheDefinition.pathProblem(path) {
                throw error(at: line(pathsNode), "the path '\(path)' in `paths` of \(what) \(problem)")
            }
        }
        var restoreKeys: [String] = []
        if let restoreNode = value(map, "restore_keys") {
            restoreKeys = try stringList(restoreNode, "`restore_keys` of \(what)")
            guard restoreKeys.count <= CacheDefinition.maximumRestoreKeys else {
                throw error(at: line(restoreNode), "`restore_keys` of \(what) lists at most \(CacheDefinition.maximumRestoreKeys) prefixes")
            }
            for index in restoreKeys.indices {
                restoreKeys[index] = try substituted(restoreKeys[index], at: restoreNode, "`restore_keys` of \(what)")
                if let problem = CacheDefinition.keyProblem(restoreKeys[index], "a prefix in `restore_keys` of \(what)") {
                    throw error(at: line(restoreNode), problem)
                }
            }
        }
        return CacheDefinition(key: key, paths: paths, restoreKeys: restoreKeys)
    }

    /// `network: none` (no network but loopback) or `network: host` (the runner's), or nil.
    private func networkSetting(_ map: Node.Mapping, _ what: String) throws(ActError) -> Bool? {
        guard let node = value(map, "network") else { return nil }
        switch try scalar(node, "`network` of \(what)") {
        case "none": return false
        case "host": return true
        case let other: throw error(at: line(node), "`network` of \(what) is '\(other)'; write none (no network but loopback) or host")
        }
    }

    /// `image: NAME`: a container image reference (`debian:12`,
    /// `registry.example.com/team/builder:3`, `localhost/tools@sha256:...`), or nil.
    private func imageSetting(_ map: Node.Mapping, _ what: String) throws(ActError) -> String? {
        guard let node = value(map, "image") else { return nil }
        let image = try substituted(try scalar(node, "`image` of \(what)"), at: node, "`image` of \(what)")
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@")
        guard !image.isEmpty, image.count <= 255, image.allSatisfy({ allowed.contains($0) }),
              let first = image.first, first.isLetter || first.isNumber else {
            throw error(at: line(node), "`image` of \(what) is '\(image.prefix(60))'; write an image reference such as debian:12 or registry.example.com/team/builder:3 (letters, digits and . _ - / : @, at most 255)")
        }
        return image
    }

    /// `secrets: [NAME, ...]`: the project's secrets given to the node as environment variables.
    private func secretsSetting(_ map: Node.Mapping, _ what: String) throws(ActError) -> [String] {
        guard let node = value(map, "secrets") else { return [] }
        let names = try stringList(node, "`secrets` of \(what)")
        for name in names {
            if let problem = Names.secretProblem(name) { throw error(at: line(node), "\(problem) (in `secrets` of \(what))") }
        }
        return names
    }

    /// `limits: { memory: 2G, cpus: 2, pids: 1000 }` (any of them).
    private func limitsSetting(_ map: Node.Mapping, _ what: String) throws(ActError) -> ResourceLimits {
        var limits = ResourceLimits()
        guard let node = value(map, "limits") else { return limits }
        for (key, valueNode) in try mapping(node, "`limits` of \(what)") {
            let name = try scalar(key, "a limit's name")
            let text = try scalar(valueNode, "`limits.\(name)` of \(what)")
            do {
                try limits.set(name, text)
            } catch {
                throw self.error(at: line(key), "\(error) (in \(what))")
            }
        }
        return limits
    }

    private func parseNode(name: String, job: String, _ node: Node, network: Bool, limits jobLimits: ResourceLimits,
                           secrets jobSecrets: [String], image jobImage: String) throws(ActError) -> (node: NodeDefinition, needsLine: Int?) {
        let what = "node '\(name)' of job '\(job)'"
        let map = try mapping(node, what)
        try checkKeys(map, allowed: ["run", "needs", "env", "timeout", "grace", "artifacts", "network", "limits", "secrets",
                                     "image"], in: what)
        let image = try imageSetting(map, what) ?? jobImage
        let secrets = Set(jobSecrets + (try secretsSetting(map, what))).sorted()
        let network = try networkSetting(map, what) ?? network
        let limits = try limitsSetting(map, what).over(jobLimits)
        guard let runNode = value(map, "run") else {
            throw error(at: line(node), "\(what) has no `run` command")
        }
        let run = try scalar(runNode, "`run` of \(what)")
        guard !run.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw error(at: line(runNode), "`run` of \(what) is empty")
        }
        var needs: [String] = []
        var needsLine: Int?
        if let needsNode = value(map, "needs") {
            needsLine = line(needsNode)
            if case .scalar = needsNode {
                needs = [try scalar(needsNode, "`needs` of \(what)")]
            } else {
                needs = try stringList(needsNode, "`needs` of \(what)")
            }
            if needs.contains(name) {
                throw error(at: line(needsNode), "\(what) needs itself, which is a cycle")
            }
        }
        var env: [String: String] = [:]
        if let envNode = value(map, "env") {
            for (key, valueNode) in try mapping(envNode, "`env` of \(what)") {
                let variable = try scalar(key, "an env name")
                guard !variable.isEmpty, !variable.contains("="), !variable.contains("\0") else {
                    throw error(at: line(key), "'\(variable)' is not a valid environment variable name")
                }
                env[variable] = try scalar(valueNode, "env '\(variable)' of \(what)")
            }
        }
        if let both = secrets.first(where: { env[$0] != nil }) {
            throw error(at: line(node), "\(what) sets env '\(both)' and is given secret '\(both)'; a variable is one or the other")
        }
        var timeout: Int?
        if let timeoutNode = value(map, "timeout") {
            let text = try scalar(timeoutNode, "`timeout` of \(what)")
            guard let seconds = Self.parseDuration(text), seconds > 0 else {
                throw error(at: line(timeoutNode),
                            "`timeout` of \(what) is '\(text)'; write seconds (90) or a duration (90s, 10m, 2h)")
            }
            timeout = seconds
        }
        var grace: Int?
        if let graceNode = value(map, "grace") {
            let text = try scalar(graceNode, "`grace` of \(what)")
            guard let seconds = Self.parseDuration(text), seconds >= 0 else {
                throw error(at: line(graceNode),
                            "`grace` of \(what) is '\(text)'; write seconds (10) or a duration (30s, 2m)")
            }
            grace = seconds
        }
        var artifacts: [String] = []
        if let artifactsNode = value(map, "artifacts") {
            artifacts = try stringList(artifactsNode, "`artifacts` of \(what)")
            for glob in artifacts {
                if glob.hasPrefix("/") || glob.split(separator: "/").contains("..") || glob.isEmpty {
                    throw error(at: line(artifactsNode),
                                "artifact glob '\(glob)' of \(what) must be a relative path inside the workspace (no leading /, no ..)")
                }
            }
        }
        return (NodeDefinition(name: name, run: run, needs: needs, env: env, timeout: timeout, grace: grace, artifacts: artifacts,
                               network: network, limits: limits, secrets: secrets, image: image), needsLine)
    }

    /// "90" or "90s" -> 90, "10m" -> 600, "2h" -> 7200.
    static func parseDuration(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed) { return seconds }
        guard let unit = trimmed.last, let number = Int(trimmed.dropLast()) else { return nil }
        switch unit {
        case "s": return number
        case "m": return number * 60
        case "h": return number * 3600
        default: return nil
        }
    }

    /// The first cycle found among `needs`, as a path that starts and ends with the same node.
    func findCycle(_ nodes: [NodeDefinition]) -> [String]? {
        let needs = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.needs) })
        var state: [String: Int] = [:]  // 1 visiting, 2 done
        var path: [String] = []
        func visit(_ name: String) -> [String]? {
            if state[name] == 2 { return nil }
            if state[name] == 1 {
                let start = path.firstIndex(of: name)!
                return Array(path[start...]) + [name]
            }
            state[name] = 1
            path.append(name)
            for need in needs[name] ?? [] {
                if let cycle = visit(need) { return cycle }
            }
            path.removeLast()
            state[name] = 2
            return nil
        }
        for node in nodes {
            if let cycle = visit(node.name) { return cycle }
        }
        return nil
    }

    // MARK: helpers

    private func error(at line: Int, _ message: String) -> ActError {
        ActError(file: file, line: line, message: message)
    }

    private func line(_ node: Node) -> Int { node.mark?.line ?? 1 }

    private func yamlError(_ error: YamlError) -> ActError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
             .composer(_, let problem, let mark, _):
            return self.error(at: mark.line, "not valid YAML: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return self.error(at: max(1, context.mark.line),
                              "'\(duplicates.joined(separator: "', '"))' appears twice in the same mapping")
        default:
            return self.error(at: 1, "not valid YAML: \(error)")
        }
    }

    private func mapping(_ node: Node, _ what: String) throws(ActError) -> Node.Mapping {
        guard case .mapping(let map) = node else {
            throw error(at: line(node), "\(what) must be a mapping (key: value lines)")
        }
        var seen = Set<String>()
        for (key, _) in map {
            let text = key.string ?? ""
            if !seen.insert(text).inserted {
                throw error(at: line(key), "'\(text)' appears twice in \(what)")
            }
        }
        return map
    }

    private func value(_ map: Node.Mapping, _ key: String) -> Node? {
        map.first { $0.key.string == key }?.value
    }

    private func checkKeys(_ map: Node.Mapping, allowed: [String], in what: String) throws(ActError) {
        for (key, _) in map {
            let text = key.string ?? "?"
            if !allowed.contains(text) {
                throw error(at: line(key), "unknown key '\(text)' in \(what) (expected \(allowed.joined(separator: ", ")))")
            }
        }
    }

    private func scalar(_ node: Node, _ what: String) throws(ActError) -> String {
        guard case .scalar(let scalar) = node else {
            throw error(at: line(node), "\(what) must be a plain value, not a list or mapping")
        }
        return scalar.string
    }

    private func stringList(_ node: Node, _ what: String) throws(ActError) -> [String] {
        guard case .sequence(let sequence) = node else {
            throw error(at: line(node), "\(what) must be a list, like [a, b]")
        }
        var out: [String] = []
        for item in sequence { out.append(try scalar(item, "an item of \(what)")) }
        return out
    }

    private func identifier(_ node: Node, _ what: String) throws(ActError) -> String {
        let text = try scalar(node, what)
        if let problem = Names.problem(text, what) { throw error(at: line(node), problem) }
        return text
    }
}
