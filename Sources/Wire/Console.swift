import Foundation

/// Unbuffered writes to the standard streams, so a line is seen by a parent process at once.
public enum Console {
    public static func out(_ line: String) {
        write(Data((line + "\n").utf8), to: .standardOutput)
    }

    public static func err(_ line: String) {
        write(Data((line + "\n").utf8), to: .standardError)
    }

    public static func raw(_ bytes: Data) {
        write(bytes, to: .standardOutput)
    }

    static func write(_ data: Data, to handle: FileHandle) {
        try? handle.write(contentsOf: data)
    }
}
