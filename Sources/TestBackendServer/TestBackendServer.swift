import ArgumentParser
import NIOPosix
import PorticoTestSupport

/// `portico-testbackend`: a tiny HTTP backend for trying Portico before the chat node exists.
@main
struct TestBackendServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portico-testbackend",
        abstract: "A small HTTP backend: / echoes the request, /echo streams the body back, /slow/MS waits."
    )

    @Option(help: "Address to listen on (host:port).")
    var listen: String = "127.0.0.1:9001"

    @Option(help: "Name reported in every answer and in the x-backend header.")
    var name: String = "backend"

    func run() async throws {
        guard let colon = self.listen.lastIndex(of: ":"),
            let port = Int(self.listen[self.listen.index(after: colon)...])
        else { throw ValidationError("--listen: expected host:port") }
        let host = String(self.listen[..<colon]).trimmingCharacters(in: "[]")
        let backend = try await TestBackend.start(name: self.name, host: host, port: port)
        print("\(self.name) listening on \(self.listen)")
        try await Task.sleep(for: .seconds(365 * 24 * 3600))
        await backend.stop()
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
