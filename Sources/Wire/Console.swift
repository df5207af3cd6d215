import Foundation
import Logging

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

extension Console {
    /// Logs to standard error at `level`; for the executables' `main` only.
    public static func bootstrapLogging(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
