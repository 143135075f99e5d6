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

    /// The longest string field (origin, room name, a member in `except`), in UTF-8 bytes: its length is a `u16`.
    public static let maxFieldLength = Int(UInt16.max)
    /// The most members `except` can list: the count is a `u16`.
    public static let maxExceptCount = Int(UInt16.max)
    /// The longest payload, in bytes: its length is a `u32`.
    public static let maxPayloadLength = Int(clamping: UInt32.max)

    /// Throws ``RelayError/envelopeFieldTooLong`` unless every field fits its length prefix. ``Relay`` and
    /// ``RedisBroker`` check before they encode, so an over-long name from a client is an error, not a crash.
    public func checkEncodable() throws {
        try Self.check(
            origin: self.origin,
            room: self.room,
            except: self.except,
            payloadLength: self.payload.readableBytes
        )
    }

    /// The check of ``checkEncodable()`` before the envelope exists (the relay checks before it delivers).
    static func check(origin: String, room: Room, except: some Collection<String>, payloadLength: Int) throws {
        let limit = Self.maxFieldLength
        if origin.utf8.count > limit { throw RelayError.envelopeFieldTooLong("node id over \(limit) bytes") }
        if room.name.utf8.count > limit { throw RelayError.envelopeFieldTooLong("room name over \(limit) bytes") }
        if except.count > Self.maxExceptCount {
            throw RelayError.envelopeFieldTooLong("more than \(Self.maxExceptCount) members in except")
        }
        if except.contains(where: { $0.utf8.count > limit }) {
            throw RelayError.envelopeFieldTooLong("member id over \(limit) bytes")
        }
        if payloadLength > Self.maxPayloadLength {
            throw RelayError.envelopeFieldTooLong("payload over \(Self.maxPayloadLength) bytes")
        }
    }

    /// The envelope's bytes: version, origin, epoch, sequence, room, except list, payload.
    ///
    /// Never traps: a field longer than its length prefix allows (see ``checkEncodable()``) is cut to fit, at a
    /// character boundary, so the bytes always decode. Call ``checkEncodable()`` first to get an error instead.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var payload = self.payload
        if payload.readableBytes > Self.maxPayloadLength {
            payload = payload.getSlice(at: payload.readerIndex, length: Self.maxPayloadLength) ?? ByteBuffer()
        }
        var buffer = allocator.buffer(
            capacity: 32 + self.origin.utf8.count + self.room.name.utf8.count + payload.readableBytes
        )
        buffer.writeInteger(Self.version)
        Self.writeString(self.origin, into: &buffer)
        buffer.writeInteger(self.epoch)
        buffer.writeInteger(self.sequence)
        Self.writeString(self.room.name, into: &buffer)
        let except = self.except.prefix(Self.maxExceptCount)
        buffer.writeInteger(UInt16(except.count))  // at most maxExceptCount: fits
        for member in except { Self.writeString(member, into: &buffer) }
        buffer.writeInteger(UInt32(payload.readableBytes))  // at most maxPayloadLength: fits
        buffer.writeImmutableBuffer(payload)
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
        let utf8 = text.utf8
        guard utf8.count > Self.maxFieldLength else {
            buffer.writeInteger(UInt16(utf8.count))  // at most maxFieldLength: fits
            buffer.writeString(text)
            return
        }
        // Cut to fit, before a continuation byte (0b10xxxxxx) rather than inside a character's encoding.
        var end = utf8.index(utf8.startIndex, offsetBy: Self.maxFieldLength)
        while end > utf8.startIndex, utf8[end] & 0xC0 == 0x80 { utf8.formIndex(before: &end) }
        let bytes = utf8[..<end]
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    private static func readString(_ buffer: inout ByteBuffer) -> String? {
        guard let length = buffer.readInteger(as: UInt16.self) else { return nil }
        return buffer.readString(length: Int(length))
    }
}
