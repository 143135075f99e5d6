import NIOCore

/// A chat room: the unit a message is broadcast to (what socket.io calls a room).
public struct Room: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    public init(_ name: String) {
        self.name = name
    }

    public var description: String { self.name }
}

/// A message on its way between nodes: who sent it, to which room, and the payload bytes untouched.
public struct Envelope: Sendable, Equatable {
    /// The node that published it.
    public var origin: String
    public var room: Room
    public var payload: ByteBuffer

    public init(origin: String, room: Room, payload: ByteBuffer) {
        self.origin = origin
        self.room = room
        self.payload = payload
    }
}

/// Moves envelopes between nodes. Knows no sockets and no members: the relay does local fan-out above it.
///
/// The Redis implementation and the in-process default arrive with the relay issue; this is the contract.
public protocol Broker: Sendable {
    /// Sends `envelope` to the other nodes subscribed to its room.
    func publish(_ envelope: Envelope) async throws
    /// Starts receiving envelopes for `room`.
    func subscribe(_ room: Room) async throws
    /// Stops receiving envelopes for `room`.
    func unsubscribe(_ room: Room) async throws
    /// Envelopes from other nodes, for every subscribed room.
    var inbound: AsyncStream<Envelope> { get }
}
