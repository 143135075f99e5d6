import ArgumentParser
import NIOConcurrencyHelpers
import NIOCore
import PorticoRESP
import PorticoRelay

/// Cross-node delivery through a real Redis: one relay publishes into a room at full speed (pipelined),
/// another relay's member receives. Reports messages/s, delivery latency percentiles, and counts of missing
/// and duplicate messages (both must be 0).
struct RelayBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Cross-node messages/s and delivery latency through Redis (two relays in this process)."
    )

    @Option(help: "Redis URL.")
    var redis: String = "redis://127.0.0.1:6379"

    @Option(help: "Messages to send.")
    var messages: Int = 100_000

    @Option(help: "Payload size in bytes (at least 16).")
    var size: Int = 64

    @Option(help: "Messages per second to send; 0 sends as fast as the relay takes them.")
    var rate: Int = 0

    @Option(
        help: """
            How the sender publishes: async (Relay.broadcast, awaited one by one, from a task) or loop \
            (Relay.broadcastOnEventLoop from the relay's own event loop, 256 per loop tick, pausing while \
            the relay is backed up). loop needs --rate 0.
            """
    )
    var entry: Entry = .async

    enum Entry: String, ExpressibleByArgument {
        case async
        case loop
    }

    func run() async throws {
        guard let url = RedisURL(self.redis) else { throw ValidationError("--redis: expected redis://host:port") }
        let sender = RedisBroker(configuration: .init(url: url, node: "bench-sender"))
        let receiver = RedisBroker(configuration: .init(url: url, node: "bench-receiver"))
        let tasks = [Task { try? await sender.run() }, Task { try? await receiver.run() }]
        let relayA = Relay(node: "bench-sender", broker: sender)
        let relayB = Relay(node: "bench-receiver", broker: receiver)
        while true {
            let ready = await sender.isHealthy
            let alsoReady = await receiver.isHealthy
            if ready && alsoReady { break }
            try await Task.sleep(for: .milliseconds(20))
        }

        let received = NIOLockedValueBox((count: 0, duplicates: 0, latencies: Latencies(), seen: Set<Int>()))
        try await relayB.join(Room("bench"), member: "sink") { payload in
            var payload = payload
            guard let sequence = payload.readInteger(as: UInt64.self), let sentAt = payload.readInteger(as: UInt64.self)
            else { return }
            let latency = Int64((NIODeadline.now().uptimeNanoseconds - sentAt) / 1000)
            received.withLockedValue {
                if $0.seen.insert(Int(sequence)).inserted {
                    $0.count += 1
                    $0.latencies.record(micros: latency)
                } else {
                    $0.duplicates += 1
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))  // the subscription is in place
        let padding = [UInt8](repeating: 0x2A, count: max(0, self.size - 16))
        let started = ContinuousClock.now
        if self.entry == .loop {
            try await LoopPublisher(relay: relayA, total: self.messages, padding: padding).run()
        }
        for sequence in 0..<(self.entry == .loop ? 0 : self.messages) {
            var payload = ByteBuffer()
            payload.writeInteger(UInt64(sequence))
            payload.writeInteger(NIODeadline.now().uptimeNanoseconds)
            payload.writeBytes(padding)
            try await relayA.broadcast(payload, to: Room("bench"))
            if self.rate > 0, sequence % 100 == 99 {
                let due = started + .seconds(Double(sequence + 1) / Double(self.rate))
                if due > ContinuousClock.now { try await Task.sleep(until: due) }
            }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while received.withLockedValue({ $0.count }) < self.messages && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        let elapsed = ContinuousClock.now - started
        let result = received.withLockedValue { $0 }
        print(
            "relay redis=\(url) messages=\(self.messages) size=\(self.size)B "
                + "rate=\(self.rate == 0 ? "max" : "\(self.rate)/s") entry=\(self.entry.rawValue)"
        )
        print(
            "messages/s=\(Int(Double(result.count) / elapsed.seconds)) \(result.latencies.summary) "
                + "missing=\(self.messages - result.count) duplicates=\(result.duplicates) lost=\(await relayB.lost)"
        )
        for task in tasks { task.cancel() }
    }
}

/// Publishes from the relay's own event loop through the NIO-level entry: a burst per loop tick, pausing while
/// the relay is backed up.
///
/// `@unchecked Sendable`: `next` is touched only on the relay's event loop (every method runs there).
final class LoopPublisher: @unchecked Sendable {
    private let relay: Relay
    private let total: Int
    private let padding: [UInt8]
    private var next = 0
    private let done: EventLoopPromise<Void>

    init(relay: Relay, total: Int, padding: [UInt8]) {
        self.relay = relay
        self.total = total
        self.padding = padding
        self.done = relay.eventLoop.makePromise(of: Void.self)
    }

    func run() async throws {
        self.relay.eventLoop.execute { self.burst() }
        try await self.done.futureResult.get()
    }

    private func burst() {
        var sent = 0
        while self.next < self.total, sent < 256, !self.relay.isBackedUp {
            var payload = ByteBuffer()
            payload.writeInteger(UInt64(self.next))
            payload.writeInteger(NIODeadline.now().uptimeNanoseconds)
            payload.writeBytes(self.padding)
            do {
                try self.relay.broadcastOnEventLoop(payload, to: Room("bench"))
            } catch {
                self.done.fail(error)
                return
            }
            self.next += 1
            sent += 1
        }
        if self.next == self.total {
            self.done.succeed()
        } else if self.relay.isBackedUp {
            self.relay.eventLoop.scheduleTask(in: .microseconds(200)) { self.burst() }
        } else {
            self.relay.eventLoop.execute { self.burst() }
        }
    }
}
