import NIOCore

/// Follows RFC 6455 frame headers in one direction of a tunnel without unmasking or copying payloads.
///
/// The tunnel forwards the very `ByteBuffer`s it reads; the tracker only reads header bytes, so it can count
/// messages, enforce the message size limit and protocol rules, and tell where frames begin, which is where a
/// Close frame may be put into the stream.
public struct WebSocketFrameTracker: Sendable {
    /// Which peer sends the bytes this tracker reads.
    public enum Sender: Sendable {
        /// The downstream client: its frames must be masked (RFC 6455 §5.1).
        case client
        /// The upstream backend.
        case server
    }

    /// Why a stream must be closed, with the close code to send to its sender.
    public struct Violation: Error, Equatable {
        public let code: UInt16
        public let reason: String

        static func protocolError(_ reason: String) -> Violation { Violation(code: 1002, reason: reason) }
        static let tooBig = Violation(code: 1009, reason: "message too big")
    }

    /// What one `consume` call found.
    public struct Outcome: Equatable, Sendable {
        /// Bytes of the buffer that may be forwarded (all of them unless a violation or a boundary stop).
        public var forwardable: Int
        public var violation: Violation?
        /// After a violation: the forwarded bytes end on a frame boundary (false when part of the offending
        /// frame's header had gone out with an earlier read), so a Close frame can still follow them.
        public var isBoundaryClean = true
    }

    /// Which RSV bits (RFC 6455 §5.2) a frame may set: none unless the handshake negotiated an extension.
    public enum ReservedBits: Sendable, Equatable {
        /// No extension: any RSV bit is a protocol error (1002).
        case none
        /// permessage-deflate (RFC 7692 §6): RSV1 on the first frame of a data message only.
        case perMessageDeflate
        /// An extension the proxy does not know: it defines the bits, so none are checked.
        case any

        /// What the `Sec-WebSocket-Extensions` values of a backend's 101 allow.
        public init(negotiated extensions: [String]) {
            let names = extensions.flatMap { $0.split(separator: ",") }.compactMap { element in
                element.split(separator: ";").first.map { $0.trimmingASCIISpaces().lowercased() }
            }
            if names.isEmpty {
                self = .none
            } else if names.allSatisfy({ $0 == "permessage-deflate" }) {
                self = .perMessageDeflate
            } else {
                self = .any
            }
        }
    }

    let sender: Sender
    let maxMessageBytes: Int
    let reservedBits: ReservedBits

    /// Header bytes of the frame being read, while fewer than its full header have arrived.
    private var header = HeaderBytes()
    /// Payload bytes of the current frame still to come.
    private(set) var payloadRemaining: UInt64 = 0
    /// A fragmented data message is open (a frame without FIN was seen).
    private var inMessage = false
    private var messageBytes: UInt64 = 0
    /// Close frame payload bytes to read for the close code (the first two, unmasked here).
    private var closeCodeBytes: [UInt8] = []
    private var closeCodeMask: [UInt8] = []
    private var closeCodeNeeded = 0
    private var closeCodeOffset = 0

    /// Complete data messages seen.
    public private(set) var messages = 0
    /// Frames seen, control frames (ping, pong, close) included.
    public private(set) var frames = 0
    private(set) var bytes = 0
    /// The sender has sent a Close frame.
    private(set) var sawClose = false
    /// The code in the sender's Close frame, when it had one.
    private(set) var closeCode: UInt16?

    /// - Parameters:
    ///   - sender: who sends the bytes this tracker reads.
    ///   - maxMessageBytes: the largest data message, counted in payload bytes as they cross the wire (so
    ///     compressed bytes under permessage-deflate).
    ///   - reservedBits: the RSV bits the handshake allows; `.none` by default.
    public init(sender: Sender, maxMessageBytes: Int, reservedBits: ReservedBits = .none) {
        self.sender = sender
        self.maxMessageBytes = maxMessageBytes
        self.reservedBits = reservedBits
    }

    /// No frame is partly read: a frame of our own can go into the stream here.
    var isAtFrameBoundary: Bool { self.header.isEmpty && self.payloadRemaining == 0 }

    /// Reads `buffer`'s frame headers.
    ///
    /// - Parameters:
    ///   - buffer: bytes as read from the sender, in order.
    ///   - stopAtBoundary: stop at the first frame boundary (for inserting a frame there).
    /// - Returns: how many bytes may be forwarded, and a violation if the sender broke the protocol. On a
    ///   violation, `forwardable` ends where the offending frame starts, so it never reaches the peer.
    public mutating func consume(_ buffer: ByteBuffer, stopAtBoundary: Bool = false) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            self.consume(bytes, stopAtBoundary: stopAtBoundary)
        }
    }

    private mutating func consume(_ bytes: UnsafeRawBufferPointer, stopAtBoundary: Bool) -> Outcome {
        var offset = 0
        var frameStart = 0
        // A header split across reads began in an earlier buffer, whose bytes are already forwarded.
        var headerStartedHere = self.header.isEmpty
        while offset < bytes.count {
            if stopAtBoundary && self.isAtFrameBoundary {
                self.bytes += offset
                return Outcome(forwardable: offset, violation: nil)
            }
            if self.payloadRemaining > 0 {
                let take = Int(min(UInt64(bytes.count - offset), self.payloadRemaining))
                if self.closeCodeNeeded > 0 { self.readCloseCode(bytes, from: offset, count: take) }
                offset += take
                self.payloadRemaining -= UInt64(take)
                continue
            }
            if self.header.isEmpty {
                frameStart = offset
                headerStartedHere = true
            }
            self.header.append(bytes[offset])
            offset += 1
            guard let needed = Self.headerLength(self.header), self.header.count >= needed else { continue }
            let violation = self.frameHeaderComplete()
            self.header.removeAll()
            if let violation {
                let forwardable = headerStartedHere ? frameStart : 0
                self.bytes += forwardable
                return Outcome(forwardable: forwardable, violation: violation, isBoundaryClean: headerStartedHere)
            }
        }
        self.bytes += offset
        return Outcome(forwardable: offset, violation: nil)
    }

    /// The full header length once the first two (or the extended-length) bytes are known.
    private static func headerLength(_ header: HeaderBytes) -> Int? {
        guard header.count >= 2 else { return nil }
        let masked = header[1] & 0x80 != 0
        let extra = masked ? 4 : 0
        switch header[1] & 0x7F {
        case 126: return 4 + extra
        case 127: return 10 + extra
        default: return 2 + extra
        }
    }

    private mutating func frameHeaderComplete() -> Violation? {
        let fin = self.header[0] & 0x80 != 0
        let opcode = self.header[0] & 0x0F
        let masked = self.header[1] & 0x80 != 0
        var length = UInt64(self.header[1] & 0x7F)
        var cursor = 2
        if length == 126 {
            length = UInt64(self.header[2]) << 8 | UInt64(self.header[3])
            cursor = 4
        } else if length == 127 {
            length = 0
            for index in 2..<10 { length = length << 8 | UInt64(self.header[index]) }
            cursor = 10
            if length >> 63 != 0 { return .protocolError("invalid frame length") }
        }
        if self.sender == .client && !masked { return .protocolError("client frame not masked") }
        let reserved = self.header[0] & 0x70
        if reserved != 0 {
            switch self.reservedBits {
            case .none:
                return .protocolError("reserved bits set without a negotiated extension")
            case .perMessageDeflate:
                guard reserved == 0x40, opcode == 0x1 || opcode == 0x2 else {
                    return .protocolError("reserved bits not allowed on this frame")
                }
            case .any:
                break
            }
        }
        self.frames += 1
        switch opcode {
        case 0x0:  // continuation
            guard self.inMessage else { return .protocolError("continuation without a message") }
            if let violation = self.addToMessage(length) { return violation }
            if fin { self.endMessage() }
        case 0x1, 0x2:  // text, binary
            guard !self.inMessage else { return .protocolError("new message inside a fragmented one") }
            self.inMessage = true
            self.messageBytes = 0
            if let violation = self.addToMessage(length) { return violation }
            if fin { self.endMessage() }
        case 0x8, 0x9, 0xA:  // close, ping, pong
            guard fin, length <= 125 else { return .protocolError("invalid control frame") }
            if opcode == 0x8 {
                self.sawClose = true
                if length >= 2 {
                    self.closeCodeNeeded = 2
                    self.closeCodeBytes = []
                    self.closeCodeMask = masked ? (cursor..<(cursor + 4)).map { self.header[$0] } : []
                    self.closeCodeOffset = 0
                }
            }
        default:
            return .protocolError("reserved opcode \(opcode)")
        }
        self.payloadRemaining = length
        return nil
    }

    private mutating func addToMessage(_ length: UInt64) -> Violation? {
        self.messageBytes += length
        return self.messageBytes > UInt64(self.maxMessageBytes) ? .tooBig : nil
    }

    private mutating func endMessage() {
        self.inMessage = false
        self.messages += 1
    }

    private mutating func readCloseCode(_ bytes: UnsafeRawBufferPointer, from offset: Int, count: Int) {
        var index = offset
        while self.closeCodeNeeded > 0 && index < offset + count {
            var byte = bytes[index]
            if !self.closeCodeMask.isEmpty { byte ^= self.closeCodeMask[self.closeCodeOffset % 4] }
            self.closeCodeBytes.append(byte)
            self.closeCodeOffset += 1
            self.closeCodeNeeded -= 1
            index += 1
        }
        if self.closeCodeNeeded == 0 && self.closeCodeBytes.count == 2 {
            self.closeCode = UInt16(self.closeCodeBytes[0]) << 8 | UInt16(self.closeCodeBytes[1])
        }
    }

    /// A Close frame with `code` and `reason`, masked with a random key when it goes to a server.
    static func closeFrame(code: UInt16, reason: String, masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload: [UInt8] = [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8.prefix(123))
        var frame = allocator.buffer(capacity: payload.count + 6)
        frame.writeInteger(UInt8(0x88))
        if masked {
            let key = (0..<4).map { _ in UInt8.random(in: 0...255) }
            frame.writeInteger(UInt8(0x80) | UInt8(payload.count))
            frame.writeBytes(key)
            for index in payload.indices { payload[index] ^= key[index % 4] }
        } else {
            frame.writeInteger(UInt8(payload.count))
        }
        frame.writeBytes(payload)
        return frame
    }
}

extension Substring {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}

/// A frame header's bytes (at most 14) kept inline: following a stream allocates nothing per frame.
struct HeaderBytes {
    private var low: UInt64 = 0
    private var high: UInt64 = 0
    private(set) var count = 0

    var isEmpty: Bool { self.count == 0 }

    mutating func append(_ byte: UInt8) {
        precondition(self.count < 16, "a WebSocket frame header has at most 14 bytes")
        if self.count < 8 {
            self.low |= UInt64(byte) << (8 * self.count)
        } else {
            self.high |= UInt64(byte) << (8 * (self.count - 8))
        }
        self.count += 1
    }

    subscript(index: Int) -> UInt8 {
        index < 8
            ? UInt8(truncatingIfNeeded: self.low >> (8 * index))
            : UInt8(truncatingIfNeeded: self.high >> (8 * (index - 8)))
    }

    mutating func removeAll() {
        self = HeaderBytes()
    }
}
