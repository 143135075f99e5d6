import Foundation

/// A program started for a test (portico-chat, portico), stopped with SIGKILL and always waited for.
public final class ChildProcess: Sendable {
    public let pid: Int32
    /// Foundation reaps its children itself, so the exit status comes from the `Process`, not `waitpid`.
    private let process: Process

    private init(process: Process) {
        self.process = process
        self.pid = process.processIdentifier
    }

    /// Starts `executable` with `arguments`; its output goes to `log` (or nowhere).
    public static func start(_ executable: String, _ arguments: [String], log: String? = nil) throws -> ChildProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = FileHandle(forWritingAtPath: log)
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return ChildProcess(process: process)
    }

    /// Sends `signal` (SIGTERM for an orderly stop).
    public func signal(_ signal: Int32) {
        kill(self.pid, signal)
    }

    /// Waits up to `timeout` for the process to exit; returns its exit status, or nil if it is still running.
    public func wait(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !self.process.isRunning { return self.process.terminationStatus }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    public func stop() {
        guard self.process.isRunning else { return }
        kill(self.pid, SIGKILL)
        self.process.waitUntilExit()
    }
}

/// The directory of the built products: `PORTICO_PRODUCTS` if set, else the test runner's own directory (so a
/// sanitizer build in `.build-tsan` starts its own binaries), else `.build/debug` found from a test file's path.
public func builtProductsDirectory(testFile: String = #filePath) -> String {
    if let products = ProcessInfo.processInfo.environment["PORTICO_PRODUCTS"], !products.isEmpty { return products }
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    if FileManager.default.isExecutableFile(atPath: runner.appendingPathComponent("portico-chat").path) {
        return runner.path
    }
    var components = testFile.split(separator: "/").map(String.init)
    while let last = components.last, last != "Tests" { components.removeLast() }
    components.removeLast()
    return "/" + components.joined(separator: "/") + "/.build/debug"
}
