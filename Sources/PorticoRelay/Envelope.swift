import NIOCore

/// A message on its way between nodes: who sent it, to which room, its place in the sender's sequence,
/// the members to skip, and the payload bytes untouched. Wire format: docs/relay-protocol.md, version 1.
public struct Envelope: Sendable, Equatable {
    /// The node that published it.
    public var origin: String
    /// Changes every time the origin node starts, so a restart is not mistaken for loss.
    public var epoch: UInt64
    /// Per origin and epoch, increasing by one with every message the origin publishes.
    public var sequence: UInt64
    public var room: Room
    /// Members that must not receive it (socket.io's `except`).
    public var except: [String]
    public var payload: ByteBuffer

    public init(
        origin: String,
        epoch: UInt64 = 0,
        sequence: UInt64 = 0,
        room: Room,
        except: [String] = [],
        payload: ByteBuffer
    ) {
        self.origin = origin
        self.epoch = epoch
        self.sequence = sequence
        self.room = room
        self.except = except
        self.payload = payload
    }

    static let version: UInt8 = 1

    /// The envelope's bytes: version, origin, epoch, sequence, room, except list, payload.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(
            capacity: 32 + self.origin.utf8.count + self.room.name.utf8.count + self.payload.readableBytes
        )
        buffer.writeInteger(Self.version)
        Self.writeString(self.origin, into: &buffer)
        buffer.writeInteger(self.epoch)
        buffer.writeInteger(self.sequence)
        Self.writeString(self.room.name, into: &buffer)
        buffer.writeInteger(UInt16(self.except.count))
        for member in self.except { Self.writeString(member, into: &buffer) }
        buffer.writeInteger(UInt32(self.payload.readableBytes))
        buffer.writeImmutableBuffer(self.payload)
        return buffer
    }

    /// Parses an envelope; the payload is a slice of `buffer` (no copy).
    public init?(decoding buffer: ByteBuffer) {
        var buffer = buffer
        guard buffer.readInteger(as: UInt8.self) == Self.version,
            let origin = Self.readString(&buffer),
            let epoch = buffer.readInteger(as: UInt64.self),
            let sequence = buffer.readInteger(as: UInt64.self),
            let room = Self.readString(&buffer),
            let exceptCount = buffer.readInteger(as: UInt16.self)
        else { return nil }
        var except: [String] = []
        for _ in 0..<exceptCount {
            guard let member = Self.readString(&buffer) else { return nil }
            except.append(member)
        }
        guard let length = buffer.readInteger(as: UInt32.self), let payload = buffer.readSlice(length: Int(length))
        else { return nil }
        self.init(origin: origin, epoch: epoch, sequence: sequence, room: Room(room), except: except, payload: payload)
    }

    private static func writeString(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(text.utf8.count))
        buffer.writeString(text)
    }

    private static func readString(_ buffer: inout ByteBuffer) -> String? {
        guard let length = buffer.readInteger(as: UInt16.self) else { return nil }
        return buffer.readString(length: Int(length))
    }
}
