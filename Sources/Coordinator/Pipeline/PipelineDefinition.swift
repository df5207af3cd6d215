import Foundation
import Wire

/// A parsed, validated `.act` pipeline.
public struct PipelineDefinition: Sendable, Equatable {
    public var name: String
    public var jobs: [JobDefinition]
    /// Which forge events start it (`on:`); none: manual and API only.
    public var triggers = Triggers()
    /// What a trigger may set (`inputs:`), in file order.
    public var inputs: [InputDefinition] = []

    public init(name: String, jobs: [JobDefinition], triggers: Triggers = Triggers(), inputs: [InputDefinition] = []) {
        self.name = name
        self.jobs = jobs
        self.triggers = triggers
        self.inputs = inputs
    }
}

/// An input of a pipeline: a value a trigger sets, given to every node as
/// `HEDDLE_INPUT_<NAME>` (the name in capitals).
public struct InputDefinition: Sendable, Equatable {
    public var name: String
    /// Nil: required (a trigger must set it; a forge's delivery cannot).
    public var defaultValue: String?
    /// Empty: any value; else the value must be one of these.
    public var options: [String] = []
    public var description: String = ""

    public init(name: String, defaultValue: String? = nil, options: [String] = [], description: String = "") {
        self.name = name
        self.defaultValue = defaultValue
        self.options = options
        self.description = description
    }

    /// The environment variable its value is given in.
    public var environmentName: String { "HEDDLE_INPUT_" + name.uppercased() }

    /// Inputs at most a pipeline declares, and bytes a value has at most.
    public static let maximumCount = 32
    public static let maximumValueBytes = 4096

    /// Why `name` is no input name (a letter, then letters, digits or `_`, at most 64), or nil;
    /// `noun` says what it names (a matrix's axes follow the same rule).
    public static func nameProblem(_ name: String, noun: String = "input name") -> String? {
        func letter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) }
        guard let first = name.unicodeScalars.first, letter(first), name.unicodeScalars.count <= 64,
              name.unicodeScalars.allSatisfy({ letter($0) || ("0"..."9").contains($0) || $0 == "_" })
        else { return "\(noun) '\(name.prefix(70))' must start with a letter and have only letters, digits and _ (at most 64)" }
        return nil
    }

    /// Why `value` cannot be an input's value (too long, or a NUL), or nil.
    public static func valueProblem(_ value: String) -> String? {
        if value.utf8.count > maximumValueBytes { return "at most \(maximumValueBytes) bytes" }
        if value.contains("\0") { return "no NUL character" }
        return nil
    }
}

extension PipelineDefinition {
    /// The inputs of a run: each given value checked against the declared inputs, the defaults
    /// filled in. Throws a message naming the input for an unknown input, a value not among
    /// its options, a value too long, or a required input not given.
    public func resolveInputs(_ given: [String: String]) throws(InputError) -> [String: String] {
        let declared = Dictionary(uniqueKeysWithValues: inputs.map { ($0.name, $0) })
        for name in given.keys.sorted() where declared[name] == nil {
            throw InputError(inputs.isEmpty
                ? "pipeline '\(self.name)' has no inputs; '\(name.prefix(70))' is not one"
                : "pipeline '\(self.name)' has no input '\(name.prefix(70))' (its inputs: \(inputs.map(\.name).joined(separator: ", ")))")
        }
        var resolved: [String: String] = [:]
        for input in inputs {
            guard let value = given[input.name] ?? input.defaultValue else {
                throw InputError("input '\(input.name)' of pipeline '\(name)' is required: set it (--input \(input.name)=VALUE)")
            }
            if let problem = InputDefinition.valueProblem(value) {
                throw InputError("the value of input '\(input.name)' must have \(problem)")
            }
            if !input.options.isEmpty, !input.options.contains(value) {
                throw InputError("input '\(input.name)' is '\(value.prefix(70))'; it must be one of: \(input.options.joined(separator: ", "))")
            }
            resolved[input.name] = value
        }
        return resolved
    }
}

/// Inputs a trigger set that the pipeline does not take.
public struct InputError: Error, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// The branches (globs) whose pushes and pull requests start a pipeline; nil: that event
/// does not.
public struct Triggers: Sendable, Equatable {
    public var push: [String]?
    /// Matched against the pull request's target branch.
    public var pullRequest: [String]?
    /// Times that start a run (`on.schedule`), in file order.
    public var schedules: [Schedule] = []

    public init(push: [String]? = nil, pullRequest: [String]? = nil, schedules: [Schedule] = []) {
        self.push = push
        self.pullRequest = pullRequest
        self.schedules = schedules
    }

    /// Whether `branch` matches one of `patterns`: `*` matches within one path segment,
    /// `**` across segments, `?` one character (not `/`); anything else itself.
    public static func matches(_ branch: String, _ patterns: [String]) -> Bool {
        patterns.contains { glob(Array($0.unicodeScalars)[...], Array(branch.unicodeScalars)[...]) }
    }

    static func glob(_ pattern: ArraySlice<Unicode.Scalar>, _ text: ArraySlice<Unicode.Scalar>) -> Bool {
        guard let first = pattern.first else { return text.isEmpty }
        if first == "*" {
            let doubled = pattern.dropFirst().first == "*"
            let rest = doubled ? pattern.dropFirst(2) : pattern.dropFirst()
            var index = text.startIndex
            while true {
                if glob(rest, text[index...]) { return true }
                guard index < text.endIndex, doubled || text[index] != "/" else { return false }
                index += 1
            }
        }
        guard let character = text.first else { return false }
        if first == "?" ? character != "/" : first == character {
            return glob(pattern.dropFirst(), text.dropFirst())
        }
        return false
    }
}

/// One entry of `on.schedule`: a cron expression read in a time zone, and the branch its runs
/// are of (at the branch's head when the run's checkout happens).
public struct Schedule: Sendable, Equatable {
    public var cron: CronExpression
    /// An IANA zone name (`Europe/Berlin`); `UTC` unless the file names one.
    public var timeZone: String
    public var branch: String

    public init(cron: CronExpression, timeZone: String = "UTC", branch: String = Schedule.defaultBranch) {
        self.cron = cron
        self.timeZone = timeZone
        self.branch = branch
    }

    /// The branch of a schedule that names none.
    public static let defaultBranch = "main"
    /// Entries `on.schedule` may have.
    public static let maximumCount = 16

    /// What identifies the schedule among its pipeline's, across versions of the file: the
    /// same expression, zone and branch in a new version is the same schedule (it keeps the
    /// due times it started), a changed one is a new schedule.
    public var key: String { "\(cron.description) \(timeZone) \(branch)" }

    public var zone: TimeZone { TimeZone(identifier: timeZone) ?? TimeZone(secondsFromGMT: 0)! }
}

public struct JobDefinition: Sendable, Equatable {
    public var name: String
    public var labels: [String]
    /// Times the job goes back to the queue when its runner is lost (`retry: {lost: N}`).
    public var retryLost: Int = 0
    /// In file order, which is also a valid topological order's tie-breaker.
    public var nodes: [NodeDefinition]
    /// A matrix job's instance: its values by axis (empty for other jobs).
    public var matrix: [String: String] = [:]
    /// Files kept between runs (`cache:`), or nil.
    public var cache: CacheDefinition?
}

public struct NodeDefinition: Sendable, Equatable {
    public var name: String
    public var run: String
    public var needs: [String]
    public var env: [String: String]
    /// Seconds; nil means no timeout.
    public var timeout: Int?
    /// Seconds between SIGTERM and SIGKILL when the node is stopped; nil: the runner's default.
    public var grace: Int?
    public var artifacts: [String]
    /// False: the node runs with no network but loopback (`network: none`).
    public var network: Bool = true
    /// Its resource limits (`limits:`, the job's unless the node sets one); unset: the runner's.
    public var limits = ResourceLimits()
    /// The project's secrets it is given as environment variables (`secrets:`, the job's and
    /// its own), sorted.
    public var secrets: [String] = []
    /// The container image it runs in (`image:`, the job's unless the node sets one); empty:
    /// none (the runner's sandbox).
    public var image: String = ""
}

/// An upper bound of the bytes a job's nodes take in its assignment frame: each string with
/// its tag and longest length prefix, each map entry and node with its own framing. What a
/// YAML alias expands to counts once per use, as it is sent.
enum AssignmentSize {
    static func strings(_ values: [String]) -> Int {
        values.reduce(0) { $0 + $1.utf8.count + 6 }
    }

    static func node(name: String, run: String, needs: [String], env: [String: String], artifacts: [String],
                     image: String) -> Int {
        32 + strings([name, run, image]) + strings(needs) + strings(artifacts)
            + env.reduce(0) { $0 + 12 + $1.key.utf8.count + $1.value.utf8.count }
    }

    /// Room kept in a frame for what an assignment holds beside its nodes (ids, names,
    /// branch, repository, environment).
    static let reserve = 64 * 1024
}

extension JobDefinition {
    /// An upper bound of its nodes' bytes in an assignment.
    var assignmentBytes: Int {
        nodes.reduce(0) { $0 + AssignmentSize.node(name: $1.name, run: $1.run, needs: $1.needs, env: $1.env, artifacts: $1.artifacts,
                                                       image: $1.image) }
    }
}
