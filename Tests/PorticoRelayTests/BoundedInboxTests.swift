import NIOConcurrencyHelpers
import Testing

@testable import PorticoRelay

/// The per-connection operation queue of a chat node: bounded, and it pauses and resumes the reader.
@Suite struct BoundedInboxTests {
    /// A client writes far more than the node can work through: the queue never holds more than its
    /// capacity, the reader is told to stop, and everything refused is still there to push, in order, later.
    @Test func aFloodNeverGrowsTheQueueBeyondItsBound() async {
        let inbox = BoundedInbox<Int>(capacity: 64)
        #expect(inbox.resumeAt == 32)
        #expect(inbox.shouldRead())
        var refused: [Int] = []
        for value in 0..<10_000 where !inbox.push(value) {
            refused.append(value)  // a handler keeps these (its overflow) and asks before reading more
        }
        #expect(inbox.count == 64)
        #expect(refused == Array(64..<10_000))
        #expect(!inbox.shouldRead())
        #expect(inbox.isReadingPaused)

        // The consumer takes 31: still paused. The 32nd take brings the queue down to 32 and resumes reading.
        let resumes = NIOLockedValueBox(0)
        for expected in 0..<31 {
            #expect(await inbox.next(onResume: { resumes.withLockedValue { $0 += 1 } }) == expected)
        }
        #expect(resumes.withLockedValue { $0 } == 0)
        #expect(!inbox.shouldRead())  // hysteresis: not yet
        #expect(await inbox.next(onResume: { resumes.withLockedValue { $0 += 1 } }) == 31)
        #expect(resumes.withLockedValue { $0 } == 1)
        #expect(inbox.shouldRead())
        #expect(inbox.count == 32)
    }

    /// A producer that follows the protocol (push until refused, keep the rest, read again only when told)
    /// against a slow consumer: nothing lost or reordered, the bound holds throughout, and no deadlock.
    @Test func producerAndConsumerKeepOrderUnderBackpressure() async {
        let inbox = BoundedInbox<Int>(capacity: 8)
        let total = 20_000
        let resumed = AsyncStream<Void>.makeStream()
        let consumer = Task {
            var received: [Int] = []
            while let value = await inbox.next(onResume: { resumed.continuation.yield() }) {
                received.append(value)
                if value % 1_000 == 0 { await Task.yield() }
            }
            return received
        }
        var pending = Array(0..<total)[...]
        var highest = 0
        var resumes = resumed.stream.makeAsyncIterator()
        while !pending.isEmpty {
            // One "socket read" brings in up to 50 values; what the queue refuses waits in `pending`.
            for _ in 0..<50 {
                guard let value = pending.first, inbox.push(value) else { break }
                pending.removeFirst()
            }
            highest = max(highest, inbox.count)
            if !inbox.shouldRead() { await resumes.next() }  // paused until the consumer makes room
        }
        inbox.finish()
        #expect(await consumer.value == Array(0..<total))
        #expect(highest <= 8)
    }

    @Test func finishDeliversWhatIsLeftThenEnds() async {
        let inbox = BoundedInbox<String>(capacity: 4)
        let waiting = Task { await inbox.next(onResume: {}) }
        try? await Task.sleep(for: .milliseconds(20))
        #expect(inbox.push("first"))  // straight to the waiting consumer
        #expect(await waiting.value == "first")
        #expect(inbox.push("second"))
        inbox.finish()
        #expect(inbox.push("after"))  // taken and dropped: the connection is gone
        #expect(await inbox.next(onResume: {}) == "second")
        #expect(await inbox.next(onResume: {}) == nil)
    }
}
