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
    /// Sends `envelope` to the other nodes subscribed to its room.
    func publish(_ envelope: Envelope) async throws
    /// Starts receiving envelopes for `room`.
    func subscribe(_ room: Room) async throws
    /// Stops receiving envelopes for `room`.
    func unsubscribe(_ room: Room) async throws
    /// Envelopes from other nodes, for every subscribed room.
    var inbound: AsyncStream<Envelope> { get }

    /// Records how many local members this node has in `room` (for cluster-wide counts).
    func setPresence(_ room: Room, members: Int) async
    /// Members of `room` on every live node.
    func presence(_ room: Room) async -> Int
    /// Ids of the nodes alive now.
    func liveNodes() async -> [String]
}
