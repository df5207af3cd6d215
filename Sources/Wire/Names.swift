/// The rules for what clients name: projects, pipelines, jobs, nodes and labels, and
/// branches. Every front and the `.act` parser check through here (README, "Names").
public enum Names {
    public static let maximumLength = 100
    public static let maximumBranchBytes = 255
    static let characters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

    /// Why `name` is no name (1 to 100 letters, digits, '.', '_' or '-', and not '.' or
    /// '..'), or nil when it is one. `what` is how the message calls it ("project name").
    public static func problem(_ name: String, _ what: String) -> String? {
        guard !name.isEmpty else { return "\(what) is empty" }
        guard name.count <= maximumLength else {
            return "\(what) '\(name.prefix(20))...' is \(name.count) characters long; the limit is \(maximumLength)"
        }
        guard name.allSatisfy({ characters.contains($0) }) else {
            return "\(what) '\(name)' may use only letters, digits, '.', '_' and '-'"
        }
        guard name != "." && name != ".." else { return "\(what) may not be '\(name)'" }
        return nil
    }

    /// Why `branch` is no branch name (1 to 255 bytes; no control characters, spaces, '..',
    /// '~', '^', ':', '?', '*', '[' or '\'; not starting with '-' or '/', not ending with '/',
    /// '.' or '.lock': what git accepts, roughly), or nil when it is one.
    public static func branchProblem(_ branch: String) -> String? {
        let shown = branch.utf8.count > 40 ? "\(String(branch.unicodeScalars.prefix(40).filter { $0.value >= 0x20 && $0.value != 0x7F }.map(Character.init)))..." : branch
        guard !branch.isEmpty else { return "the branch is empty" }
        guard branch.utf8.count <= maximumBranchBytes else {
            return "branch '\(shown)' is \(branch.utf8.count) bytes long; the limit is \(maximumBranchBytes)"
        }
        let forbidden: Set<Unicode.Scalar> = [" ", "~", "^", ":", "?", "*", "[", "\\"]
        guard !branch.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || forbidden.contains($0) }) else {
            return "branch '\(shown.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.map(String.init).joined())' has a control character, a space or one of ~ ^ : ? * [ \\"
        }
        guard !branch.contains(".."), !branch.hasPrefix("-"), !branch.hasPrefix("/"), !branch.hasSuffix("/"),
              !branch.hasSuffix("."), !branch.hasSuffix(".lock"), !branch.contains("//") else {
            return "branch '\(shown)' is not a valid branch name (no '..' or '//', not starting with '-' or '/', not ending with '/', '.' or '.lock')"
        }
        return nil
    }

    public static let maximumSecretNameBytes = 64
    public static let secretValueBytes = 4...65_536

    /// Why `name` is no secret name (an environment variable's: 1 to 64 of A-Z, 0-9 and '_',
    /// not starting with a digit or with HEDDLE_, which the runner sets), or nil when it is one.
    public static func secretProblem(_ name: String) -> String? {
        guard !name.isEmpty else { return "the secret's name is empty" }
        guard name.utf8.count <= maximumSecretNameBytes else {
            return "secret name '\(name.prefix(20))...' is \(name.utf8.count) bytes long; the limit is \(maximumSecretNameBytes)"
        }
        guard name.utf8.allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }),
              let first = name.utf8.first, !(first >= 0x30 && first <= 0x39) else {
            return "secret name '\(name)' must be an environment variable's name: capital letters, digits and '_', not starting with a digit"
        }
        guard !name.hasPrefix("HEDDLE_") else { return "secret name '\(name)' may not start with HEDDLE_ (the runner sets those variables)" }
        return nil
    }

    /// Why `value` cannot be a secret's value (4 to 65,536 bytes: a shorter one would mask
    /// too much of a log), or nil.
    public static func secretValueProblem(_ value: [UInt8]) -> String? {
        guard secretValueBytes.contains(value.count) else {
            return "a secret's value is \(value.count) bytes; it must be \(secretValueBytes.lowerBound) to \(secretValueBytes.upperBound) (shorter values cannot be masked in logs)"
        }
        return nil
    }
}
