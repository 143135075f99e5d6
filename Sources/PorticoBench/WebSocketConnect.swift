import ArgumentParser
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Handshake rate: C connectors each open a connection, upgrade it, and close it, over and over.
struct WebSocketConnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-connect",
        abstract: "Handshakes/s and handshake latency: connect, upgrade, close, repeat (C at a time)."
    )

    @OptionGroup var endpoint: WebSocketTarget

    @Option(help: "Connections being opened at any time.")
    var concurrency: Int = 50

    @Option(help: "Seconds to run.")
    var duration: Int = 5

    func run() async throws {
        let (host, port) = try parseTarget(self.endpoint.target)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let request = WebSocketWire.upgradeRequest(host: host, path: self.endpoint.path)
        let started = ContinuousClock.now
        let end = started + .seconds(self.duration)
        let totals = NIOLockedValueBox((handshakes: 0, failures: 0, latencies: Latencies()))
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<self.concurrency {
                tasks.addTask {
                    var local = (handshakes: 0, failures: 0, latencies: Latencies())
                    while ContinuousClock.now < end {
                        let began = NIODeadline.now()
                        do {
                            let (channel, upgraded) = try await openWebSocket(
                                group: group,
                                host: host,
                                port: port,
                                request: request
                            )
                            if upgraded {
                                local.handshakes += 1
                                local.latencies.record(since: began)
                            } else {
                                local.failures += 1
                            }
                            try? await channel.close()
                        } catch {
                            local.failures += 1
                        }
                    }
                    totals.withLockedValue {
                        $0.handshakes += local.handshakes
                        $0.failures += local.failures
                        $0.latencies.add(local.latencies)
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - started
        let result = totals.withLockedValue { $0 }
        try await group.shutdownGracefully()
        print("ws-connect target=\(self.endpoint.target) concurrency=\(self.concurrency) duration=\(self.duration)s")
        print(
            "handshakes/s=\(Int(Double(result.handshakes) / elapsed.seconds)) \(result.latencies.summary) "
                + "failures=\(result.failures)"
        )
        if result.failures > 0 { throw ExitCode(1) }
    }
}
