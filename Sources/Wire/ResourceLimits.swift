import Foundation

/// A node's resource limits (`limits: { memory: 2G, cpus: 2, pids: 1000 }` in a pipeline, a
/// runner's `--limits memory=2G,cpus=2,pids=1000`): each nil when not set.
public struct ResourceLimits: Sendable, Equatable {
    /// Bytes of memory (and swap) the node's processes may use together.
    public var memory: Int64?
    /// CPU time per second, in thousandths of a CPU (2000: two CPUs).
    public var cpuMillis: Int64?
    /// Processes and threads the node may have at once.
    public var pids: Int64?

    public init(memory: Int64? = nil, cpuMillis: Int64? = nil, pids: Int64? = nil) {
        self.memory = memory
        self.cpuMillis = cpuMillis
        self.pids = pids
    }

    public var isEmpty: Bool { memory == nil && cpuMillis == nil && pids == nil }

    /// These limits, each one not set taken from `defaults`.
    public func over(_ defaults: ResourceLimits) -> ResourceLimits {
        ResourceLimits(memory: memory ?? defaults.memory, cpuMillis: cpuMillis ?? defaults.cpuMillis, pids: pids ?? defaults.pids)
    }

    /// The smallest memory limit: 4 MiB (a shell needs about 1).
    public static let minimumMemory: Int64 = 4 << 20

    /// Sets one limit from its text: `memory` (bytes, or with K, M, G or T: 512M, 2G), `cpus`
    /// (a number of CPUs, 0.01 to 1024: 2, 0.5), `pids` (1 to 4,194,304). Throws the rule
    /// that failed.
    public mutating func set(_ name: String, _ text: String) throws(LimitError) {
        let value = text.trimmingCharacters(in: .whitespaces)
        switch name {
        case "memory":
            guard let bytes = Self.bytes(value), bytes >= Self.minimumMemory else {
                throw LimitError("memory limit '\(text)' is not a size of at least 4M (bytes, or with K, M, G or T: 512M, 2G)")
            }
            memory = bytes
        case "cpus":
            guard let cpus = Double(value), cpus >= 0.01, cpus <= 1024 else {
                throw LimitError("cpus limit '\(text)' is not a number of CPUs from 0.01 to 1024 (2, 0.5)")
            }
            cpuMillis = Int64((cpus * 1000).rounded())
        case "pids":
            guard let count = Int64(value), (1...4_194_304).contains(count) else {
                throw LimitError("pids limit '\(text)' is not a number from 1 to 4194304")
            }
            pids = count
        default:
            throw LimitError("unknown limit '\(name)'; the limits are memory, cpus and pids")
        }
    }

    /// `memory=2G,cpus=2,pids=1000` (any of them, in any order).
    public static func parse(_ text: String) throws(LimitError) -> ResourceLimits {
        var limits = ResourceLimits()
        for part in text.split(separator: ",") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { throw LimitError("'\(part)' is not NAME=VALUE (memory=2G,cpus=2,pids=1000)") }
            try limits.set(pair[0], pair[1])
        }
        return limits
    }

    /// "64M" -> 67,108,864; plain digits are bytes; nil when not a size.
    public static func bytes(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text)
        var unit: Int64 = 1
        if let last = digits.last?.uppercased().first, let factor = units[last] {
            unit = factor
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let number = Int64(digits), number >= 0 else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: unit)
        return overflow ? nil : product
    }

    /// A size as a person writes it: 67,108,864 -> "64M"; bytes when no unit divides it.
    public static func size(_ bytes: Int64) -> String {
        for (unit, factor) in [("T", Int64(1) << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] where bytes % factor == 0 && bytes >= factor {
            return "\(bytes / factor)\(unit)"
        }
        return "\(bytes)"
    }
}

public struct LimitError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
