import Logging
import NIOCore
import NIOEmbedded
import PorticoRESP
import Testing

@testable import PorticoRelay

/// The publish queue's bookkeeping on an embedded loop, with a target that records batches and lets the test
/// answer them (the Redis side is covered by RelayTests against a real redis-server).
@Suite struct PublishQueueTests {
    final class Recorder: PublishTarget, @unchecked Sendable {
        let keepsOrder: Bool
        init(keepsOrder: Bool = true) { self.keepsOrder = keepsOrder }
        // Only touched on the embedded loop (the test's thread).
        var batches: [(messages: [String], promise: EventLoopPromise<Void>)] = []

        func publish(
            _ batch: [(channel: ByteBuffer, payload: ByteBuffer)],
            on eventLoop: any EventLoop
        )
            -> EventLoopFuture<Void>
        {
            let promise = eventLoop.makePromise(of: Void.self)
            self.batches.append((batch.map { String(buffer: $0.payload) }, promise))
            return promise.futureResult
        }
    }

    static func queue(_ loop: EmbeddedEventLoop, limit: Int = 100) -> PublishQueue {
        PublishQueue(
            eventLoop: loop,
            limit: limit,
            logger: Logger(label: "test"),
            channelName: { ByteBuffer(string: $0.name) },
            onDrop: {}
        )
    }

    /// Lanes as over a Redis Cluster, attached to a recorder that keeps no order (one batch at a time).
    static func clusterLanes(_ loop: EmbeddedEventLoop, limit: Int) -> (PublishLanes, Recorder) {
        let lanes = PublishLanes(
            eventLoop: loop,
            limit: limit,
            sharded: true,
            logger: Logger(label: "test"),
            channelName: { ByteBuffer(string: $0.name) },
            onDrop: {}
        )
        let target = Recorder(keepsOrder: false)
        lanes.attach(target)
        return (lanes, target)
    }

    static func enqueue(_ queue: PublishQueue, _ texts: [String]) {
        for text in texts {
            queue.enqueue(envelope: ByteBuffer(string: text), room: Room("r"))
        }
    }

    @Test func everythingPublishedInOneTickIsOneBatch() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop)
        let target = Recorder()
        queue.attach(target)
        Self.enqueue(queue, ["1", "2", "3"])
        #expect(target.batches.isEmpty)  // not before the tick ends
        loop.run()
        #expect(target.batches.map(\.messages) == [["1", "2", "3"]])
        #expect(queue.count == 3)  // unconfirmed
        target.batches[0].promise.succeed()
        loop.run()
        #expect(queue.count == 0)
    }

    @Test func whatAFailedConnectionLeftUnconfirmedGoesAgainInOrder() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop)
        let first = Recorder()
        queue.attach(first)
        Self.enqueue(queue, ["1", "2"])
        loop.run()
        Self.enqueue(queue, ["3"])
        loop.run()
        first.batches[0].promise.succeed()  // 1 and 2 confirmed; 3 in flight when the connection dies
        first.batches[1].promise.fail(ChannelError.ioOnClosedChannel)
        loop.run()
        queue.detach()
        Self.enqueue(queue, ["4"])  // while away: buffered
        loop.run()
        let second = Recorder()
        queue.attach(second)
        loop.run()
        #expect(second.batches.map(\.messages) == [["3", "4"]])
        #expect(queue.dropped == 0)
    }

    @Test func whileAwayTheOldestIsDroppedAndWhileConnectedPublishersWait() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop, limit: 3)
        Self.enqueue(queue, ["1", "2", "3", "4", "5"])  // away: 1 and 2 make room
        #expect(queue.dropped == 2)
        #expect(!queue.isFull)  // away: publishers never wait, the queue drops instead
        let target = Recorder()
        queue.attach(target)
        #expect(queue.isFull)  // connected and at the limit: publishers wait
        loop.run()
        #expect(target.batches.map(\.messages) == [["3", "4", "5"]])
        target.batches[0].promise.succeed()
        loop.run()
        #expect(!queue.isFull)
    }

    /// An error reply (CLUSTERDOWN, a failover) on a connection that stays up: everything unconfirmed goes
    /// again over the same target after a pause, in order; publishing never stops.
    @Test func anErrorReplyIsRetriedOnTheSameConnection() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop)
        let target = Recorder()
        queue.attach(target)
        Self.enqueue(queue, ["1", "2"])
        loop.run()
        Self.enqueue(queue, ["3"])
        loop.run()
        target.batches[0].promise.fail(ChannelError.ioOnClosedChannel)
        target.batches[1].promise.succeed()  // confirmed after a failure before it: sent again anyway
        loop.run()
        #expect(target.batches.count == 2)
        loop.advanceTime(by: .milliseconds(100))
        #expect(target.batches.map(\.messages) == [["1", "2"], ["3"], ["1", "2", "3"]])
        target.batches[2].promise.succeed()
        loop.run()
        #expect(queue.count == 0)
    }

    /// Entries leave the queue only when every batch before theirs is confirmed, whatever order the
    /// confirmations come in; a target that cannot keep order gets one batch at a time.
    @Test func confirmationsOutOfOrderKeepTheEarlierBatchQueued() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop)
        let target = Recorder()
        queue.attach(target)
        Self.enqueue(queue, ["1"])
        loop.run()
        Self.enqueue(queue, ["2"])
        loop.run()
        target.batches[1].promise.succeed()
        loop.run()
        #expect(queue.count == 2)
        target.batches[0].promise.succeed()
        loop.run()
        #expect(queue.count == 0)

        let serial = Recorder(keepsOrder: false)
        queue.attach(serial)
        Self.enqueue(queue, ["3"])
        loop.run()
        Self.enqueue(queue, ["4"])
        loop.run()
        #expect(serial.batches.map(\.messages) == [["3"]])  // the next waits for this one
        serial.batches[0].promise.succeed()
        loop.run()
        #expect(serial.batches.map(\.messages) == [["3"], ["4"]])
    }

    /// While batches fail, Redis counts as away: a full queue drops its oldest (counted) instead of making
    /// publishers wait on a master that may be down for long; the first batch that goes through ends that.
    @Test func whileBatchesFailPublishersDoNotWait() {
        let loop = EmbeddedEventLoop()
        let queue = Self.queue(loop, limit: 2)
        let target = Recorder()
        queue.attach(target)
        Self.enqueue(queue, ["1", "2"])
        #expect(queue.isFull)
        loop.run()
        target.batches[0].promise.fail(ChannelError.ioOnClosedChannel)
        loop.run()
        #expect(!queue.isFull)
        Self.enqueue(queue, ["3"])  // 1 goes to make room
        #expect(queue.dropped == 1)
        loop.advanceTime(by: .milliseconds(100))
        #expect(target.batches.last?.messages == ["2", "3"])
        target.batches.last?.promise.succeed()
        loop.run()
        #expect(queue.count == 0)
        Self.enqueue(queue, ["4", "5"])
        #expect(queue.isFull)  // connected again: publishers wait
    }

    /// Over a cluster, each master has its lane: one whose batches fail (its master is down) buffers on its
    /// own while rooms on the other masters flow, and never makes publishers wait.
    @Test func aFailingLaneHoldsUpNoOtherRoom() {
        let loop = EmbeddedEventLoop()
        let (lanes, target) = Self.clusterLanes(loop, limit: 2)
        // Two rooms whose slots two different masters own.
        let down = Room("a")
        let up = Room("b")
        let slotA = RedisClusterSlot.of("a")
        var owners = [RedisClusterClient.NodeAddress?](
            repeating: .init(host: "127.0.0.1", port: 2),
            count: RedisClusterSlot.count
        )
        owners[slotA] = .init(host: "127.0.0.1", port: 1)
        lanes.setOwners(owners)
        lanes.enqueue(envelope: ByteBuffer(string: "a1"), room: down)
        lanes.enqueue(envelope: ByteBuffer(string: "b1"), room: up)
        loop.run()
        #expect(Set(target.batches.map(\.messages)) == [["a1"], ["b1"]])  // one batch per lane, both in flight
        let laneOf = { (text: String) in target.batches.lastIndex { $0.messages.contains(text) }! }
        target.batches[laneOf("a1")].promise.fail(ChannelError.ioOnClosedChannel)
        target.batches[laneOf("b1")].promise.succeed()
        loop.run()
        for text in ["a2", "a3", "a4"] { lanes.enqueue(envelope: ByteBuffer(string: text), room: down) }
        #expect(!lanes.isFull)  // the failing lane drops its oldest instead
        #expect(lanes.dropped == 2)
        lanes.enqueue(envelope: ByteBuffer(string: "b2"), room: up)
        loop.run()
        #expect(target.batches.last?.messages == ["b2"])  // b's lane is free: b2 goes at once
        target.batches.last?.promise.succeed()
        loop.advanceTime(by: .milliseconds(100))
        #expect(target.batches.last?.messages == ["a3", "a4"])  // a's lane retries what it kept, in order
        target.batches.last?.promise.succeed()
        loop.run()
        #expect(lanes.count == 0)
    }

    /// A failover moves a room's slot while its lane still holds its messages: the room stays on that lane
    /// until it has sent them all (nothing said later overtakes them), then follows its slot.
    @Test func aRoomWhoseSlotMovesKeepsItsOrder() {
        let loop = EmbeddedEventLoop()
        let (lanes, target) = Self.clusterLanes(loop, limit: 100)
        let room = Room("a")
        let old = RedisClusterClient.NodeAddress(host: "127.0.0.1", port: 1)
        let new = RedisClusterClient.NodeAddress(host: "127.0.0.1", port: 2)
        lanes.setOwners(.init(repeating: old, count: RedisClusterSlot.count))
        lanes.enqueue(envelope: ByteBuffer(string: "1"), room: room)
        loop.run()
        target.batches[0].promise.fail(ChannelError.ioOnClosedChannel)  // the old master is down: "1" waits
        loop.run()
        lanes.setOwners(.init(repeating: new, count: RedisClusterSlot.count))  // its replica took over
        lanes.enqueue(envelope: ByteBuffer(string: "2"), room: room)
        loop.run()
        #expect(target.batches.count == 1)  // "2" did not go ahead on the new lane
        loop.advanceTime(by: .milliseconds(100))
        #expect(target.batches.last?.messages == ["1", "2"])
        target.batches.last?.promise.succeed()
        loop.run()
        lanes.enqueue(envelope: ByteBuffer(string: "3"), room: Room("b"))  // another room in between
        lanes.enqueue(envelope: ByteBuffer(string: "4"), room: room)  // the old lane is empty: the new one now
        loop.run()
        #expect(target.batches.count == 3)  // "3" and "4" on the new master's lane, one batch
        #expect(target.batches.last?.messages == ["3", "4"])
        #expect(lanes.count == 2)
    }
}
