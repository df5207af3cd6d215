import Coordinator
import Foundation

// The libFuzzer target for the frame decoder and message dispatch (see scripts/fuzz).
// Built normally, it is a replay tool: `heddle-fuzz FILE...` runs each file through the same
// code, to reproduce a crash libFuzzer found.

/// Runs async work to completion from libFuzzer's synchronous callback.
final class Blocking: @unchecked Sendable {
    static let fuzzer = try! DispatchFuzzer()

    static func run(_ bytes: [UInt8]) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await fuzzer.run(bytes)
            done.signal()
        }
        done.wait()
    }
}

#if HEDDLE_LIBFUZZER
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    Blocking.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's `main` to this symbol; hand the process to libFuzzer.
@_cdecl("heddle_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzOneInput)
}
#else
@main
struct Replay {
    static func main() {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            FileHandle.standardError.write(Data("usage: heddle-fuzz FILE... (replays inputs; scripts/fuzz builds the libFuzzer target)\n".utf8))
            exit(2)
        }
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
                exit(1)
            }
            Blocking.run(Array(data))
            print("\(path): ok")
        }
    }
}
#endif
