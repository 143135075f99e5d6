import NIOCore

/// A chat room: the unit a message is broadcast to (what socket.io calls a room).
public struct Room: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    public init(_ name: String) {
        self.name = name
    }

    public var description: String { self.name }
}

/// Moves envelopes between nodes. Knows no sockets and no members: the ``Relay`` does local fan-out above it.
public protocol Broker: Sendable {
    /// Sends `envelope` to the other nodes subscribed to its room. Synchronous, so that envelopes go out in
    /// the order they were published (the relay publishes each room's sequence in order); it queues, it does
    /// not wait. Throws only for an envelope that cannot be encoded.
    func publish(_ envelope: Envelope) throws
    /// Whether publishers should wait (``waitForSpace()``) before publishing more: the broker's queue is full
    /// while it can send. Read on every publish: cheap, any thread.
    var isBackedUp: Bool { get }
    /// Returns once the queue has room again, or the broker stopped being able to send (then it buffers).
    func waitForSpace() async
    /// Starts receiving envelopes for `room`.
    func subscribe(_ room: Room) async throws
    /// Stops receiving envelopes for `room`.
    func unsubscribe(_ room: Room) async throws
    /// Where envelopes from other nodes go, for every subscribed room: the ``Relay`` attaches its data plane
    /// once, when it is created, before anything is subscribed.
    func attach(_ sink: InboundSink)

    /// Records how many local members this node has in `room` (for cluster-wide counts).
    func setPresence(_ room: Room, members: Int) async
    /// Members of `room` on every live node.
    func presence(_ room: Room) async -> Int
    /// Ids of the nodes alive now.
    func liveNodes() async -> [String]
}

/// A relay's data plane as its broker sees it: envelopes go in on ``eventLoop``, a read batch at a time.
public struct InboundSink: Sendable {
    let plane: RelayPlane

    /// Where the broker should read (connect its subscriber connections): envelopes handed in from there cost
    /// no hop.
    public var eventLoop: any EventLoop { self.plane.eventLoop }

    /// An envelope from another node. On ``eventLoop``, follow the last envelope of a read with
    /// ``endOfBatch()``; from any other thread it is one hop, and its own batch.
    public func receive(_ envelope: Envelope) {
        if self.plane.eventLoop.inEventLoop {
            self.plane.receive(envelope)
        } else {
            self.hop(envelope)
        }
    }

    /// An envelope that is a batch of its own (not from a read, as ``InProcessBroker``'s are): members it is
    /// written to are flushed at the end of this loop tick.
    public func receiveAlone(_ envelope: Envelope) {
        if self.plane.eventLoop.inEventLoop {
            self.plane.receive(envelope)
            self.plane.scheduleEndOfBatch()
        } else {
            self.hop(envelope)
        }
    }

    private func hop(_ envelope: Envelope) {
        let plane = self.plane
        plane.eventLoop.execute {
            plane.receive(envelope)
            plane.endOfBatch()
        }
    }

    /// The end of a read: members written to since the last call are flushed, once each.
    public func endOfBatch() {
        if self.plane.eventLoop.inEventLoop { self.plane.endOfBatch() }
    }
}
