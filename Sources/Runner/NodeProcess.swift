import Foundation
import Synchronization

/// One node's shell: `/bin/sh -c COMMAND` in its own process group, stdin from /dev/null,
/// stdout and stderr on one pipe so their bytes stay in write order. Every descendant carries
/// the node's marker (`ProcessTree`), so the whole tree can be ended, even the parts that
/// started their own session. When the shell exits, what it left behind is killed at once,
/// or, while the node is being stopped, once the grace period is over. Output is read on a
/// dedicated thread and handed over in chunks through a bounded buffer: when the consumer
/// (the log stream) is slow, the pipe fills and the node blocks instead of memory growing.
final class NodeProcess: Sendable {
    let pid: pid_t
    let token: String
    /// Output chunks, ending at EOF of the pipe.
    let output: AsyncStream<Data>
    private let slots: DispatchSemaphore
    private let exitStatus: ExitBox

    final class ExitBox: Sendable {
        struct State {
            var status: Int32?
            var waiters: [CheckedContinuation<Int32, Never>] = []
            /// Set when the node is being stopped: leftovers get until then to exit.
            var killDeadline: ContinuousClock.Instant?
        }
        private let state = Mutex(State())
        /// Signalled once, when the shell has exited (a stopping node's killer waits on it).
        let exited = DispatchSemaphore(value: 0)

        func withLock<R>(_ body: (inout State) -> R) -> R {
            state.withLock { body(&$0) }
        }
    }

    static let chunkSize = 64 * 1024
    static let bufferedChunks = 16

    /// Starts `command` in `directory`, in `sandbox` when given (`bwrap ARGS -- /bin/sh -c
    /// COMMAND`; `network` false cuts the node's network).
    /// With `container` (podman's arguments up to the image, made by `Podman.arguments`), the
    /// node runs in it instead, neither sandboxed nor in `cgroups`.
    init(command: String, environment: [String: String], directory: String, sandbox: Sandbox? = nil,
         network: Bool = true, cgroups: [String] = [], container: [String]? = nil) throws {
        // The outer shell changes to the workspace and execs the node's shell in place, so
        // the pid and process group stay the same. In a sandbox, bwrap changes to it.
        // With cgroups, a shell joins them first (`Cgroups.joining`) and execs the rest.
        var argv = if let container {
            container
        } else if let sandbox {
            [sandbox.program] + sandbox.arguments(workspace: directory, network: network) + ["--", "/bin/sh", "-c", command]
        } else {
            ["/bin/sh", "-c", "cd -- \"$0\" && exec /bin/sh -c \"$1\"", directory, command]
        }
        if !cgroups.isEmpty && container == nil { argv = Cgroups.joining(cgroups, argv) }
        let arguments = argv
        let token = UUID().uuidString
        var environment = environment
        environment[ProcessTree.variable] = token
        let envp = environment.map { "\($0.key)=\($0.value)" }.sorted()

        // Pipe creation and spawn are serialized so no other node's child inherits this
        // pipe in the moment before its ends are marked close-on-exec.
        spawnLock.lock()
        defer { spawnLock.unlock() }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw RunnerError("cannot create a pipe: \(errnoText())") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)

        // The node is started by the thread that waits for it, which lives until the node's
        // shell has exited. The kernel's parent-death signal (bwrap's `--die-with-parent`,
        // PR_SET_PDEATHSIG) follows the thread that started a process, not the process: a
        // node started from a Swift concurrency thread was killed (SIGKILL, exit code 137)
        // when that thread ended after 5 s idle, while the node ran quietly.
        let exitStatus = ExitBox()
        let started = SpawnResult()
        let waiter = Thread {
            let (pid, result) = Self.spawn(arguments, environment: envp, output: writeEnd)
            started.set(pid: pid, result: result)
            guard result == 0 else { return }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            // The shell is gone: whatever it left running goes too, so the pipe reaches EOF
            // and nothing outlives its node. While the node is being stopped, leftovers get
            // the rest of the grace period to exit on their own.
            if let deadline = exitStatus.withLock({ $0.killDeadline }) {
                while ContinuousClock.now < deadline && !ProcessTree.pids(withToken: token).isEmpty {
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            ProcessTree.signal(group: pid, token: token, SIGKILL)
            let code = NodeProcess.exitCode(status)
            let waiters = exitStatus.withLock { state -> [CheckedContinuation<Int32, Never>] in
                state.status = code
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume(returning: code) }
            exitStatus.exited.signal()
        }
        waiter.name = "heddle-node-wait"
        waiter.start()
        let (pid, result) = started.wait()
        close(writeEnd)
        guard result == 0 else {
            close(readEnd)
            throw RunnerError("cannot start \(arguments[0]): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        self.token = token
        self.exitStatus = exitStatus
        self.slots = DispatchSemaphore(value: Self.bufferedChunks)
        let (stream, continuation) = AsyncStream.makeStream(of: Data.self)
        self.output = stream

        let slots = self.slots
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: Self.chunkSize)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                slots.wait()
                continuation.yield(Data(buffer[0..<n]))
            }
            close(readEnd)
            continuation.finish()
        }
        reader.name = "heddle-node-output-\(pid)"
        reader.start()
    }

    /// The pid and `posix_spawn`'s result, handed from the waiter thread to `init`.
    private final class SpawnResult: Sendable {
        private let value = Mutex<(pid_t, Int32)?>(nil)
        private let ready = DispatchSemaphore(value: 0)

        func set(pid: pid_t, result: Int32) {
            value.withLock { $0 = (pid, result) }
            ready.signal()
        }

        func wait() -> (pid_t, Int32) {
            ready.wait()
            return value.withLock { $0 } ?? (0, EINVAL)
        }
    }

    /// `posix_spawn` of `argv` in a process group of its own, stdin from /dev/null, stdout
    /// and stderr to `output`, no other descriptor, default signal handling.
    private static func spawn(_ argv: [String], environment: [String], output: Int32) -> (pid_t, Int32) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output, 1)
        posix_spawn_file_actions_adddup2(&actions, output, 2)
        // Nothing else the runner holds (descriptors its own parent left it) reaches a node.
        _ = closeFrom?(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var spawned: pid_t = 0
        let result = withCStrings(argv) { cArgv in
            withCStrings(environment) { cEnvp in
                posix_spawn(&spawned, argv[0], &actions, &attributes, cArgv, cEnvp)
            }
        }
        return (spawned, result)
    }

    /// Call after consuming each chunk of `output`, so the reader may buffer another.
    func consumed() {
        slots.signal()
    }

    /// The shell's exit code; 128+N when killed by signal N.
    func exitCode() async -> Int32 {
        await withCheckedContinuation { continuation in
            let ready = exitStatus.withLock { state -> Int32? in
                if let status = state.status { return status }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    var hasExited: Bool { exitStatus.withLock { $0.status != nil } }

    /// Stops the whole tree: SIGTERM now, SIGKILL to whatever is left after `grace`.
    func terminate(grace: Duration) {
        let deadline = ContinuousClock.now.advanced(by: grace)
        let first = exitStatus.withLock { state -> Bool in
            guard state.status == nil, state.killDeadline == nil else { return false }
            state.killDeadline = deadline
            return true
        }
        guard first else { return }
        ProcessTree.signal(group: pid, token: token, SIGTERM)
        let killer = Thread { [self] in
            // Woken by the shell's exit, or at the deadline.
            let left = ContinuousClock.now.duration(to: deadline)
            let nanoseconds = max(0, left.components.seconds * 1_000_000_000 + left.components.attoseconds / 1_000_000_000)
            _ = exitStatus.exited.wait(timeout: .now() + .nanoseconds(Int(nanoseconds)))
            self.killNow()
        }
        killer.name = "heddle-kill-\(pid)"
        killer.start()
    }

    /// SIGKILL to whatever is left of the tree, now.
    func killNow() {
        if !hasExited { ProcessTree.signal(group: pid, token: token, SIGKILL) }
    }

    static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

private let spawnLock = NSLock()

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
/// module does not declare: found at run time, nil on an older C library.
private let closeFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

struct RunnerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func errnoText() -> String { String(cString: strerror(errno)) }

private func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var pointers = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return body(pointers)
}
