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
}
