import Foundation

/// Replaces a job's secret values with `***` in a node's output as it streams. A value split
/// across reads is still found: the end of a read that could be the start of a value is held
/// back until the next read shows whether it is (`feed`) or the output ends (`finish`).
struct SecretMask {
    static let replacement = Array("***".utf8)
    /// Longest first, so a value that contains another is masked whole.
    private let values: [[UInt8]]
    /// Which bytes start a value: the scan skips other bytes at once.
    private var starts = [Bool](repeating: false, count: 256)
    private var held: [UInt8] = []

    /// Nil when there is nothing to mask.
    init?(_ values: some Sequence<String>) {
        let bytes = Set(values.map { Array($0.utf8) }).filter { !$0.isEmpty }
        guard !bytes.isEmpty else { return nil }
        self.values = bytes.sorted { $0.count > $1.count }
        for value in self.values { starts[Int(value[0])] = true }
    }

    /// The bytes of `data` (after those held back) that can go out, masked.
    mutating func feed(_ data: Data) -> Data {
        var input = held
        input.append(contentsOf: data)
        held = []
        return Data(mask(input, final: false))
    }

    /// What was held back, at the end of the output.
    mutating func finish() -> Data {
        let rest = held
        held = []
        return Data(mask(rest, final: true))
    }

    private mutating func mask(_ input: [UInt8], final: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        var index = 0
        var copied = 0
        scan: while index < input.count {
            guard starts[Int(input[index])] else {
                index += 1
                continue
            }
            let rest = input.count - index
            for value in values {
                if rest >= value.count {
                    if input[index..<(index + value.count)].elementsEqual(value) {
                        out.append(contentsOf: input[copied..<index])
                        out.append(contentsOf: Self.replacement)
                        index += value.count
                        copied = index
                        continue scan
                    }
                } else if !final, input[index...].elementsEqual(value[0..<rest]) {
                    // The output so far ends with the start of a value: held for the next read.
                    out.append(contentsOf: input[copied..<index])
                    held = Array(input[index...])
                    return out
                }
            }
            index += 1
        }
        out.append(contentsOf: input[copied...])
        return out
    }
}
