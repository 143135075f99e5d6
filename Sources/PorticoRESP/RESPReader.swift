import CHiredis
import NIOCore

/// Why RESP bytes could not be parsed.
public struct RESPError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { "RESP protocol error: \(self.message)" }
}

/// Incremental RESP2 parser over hiredis's reader. The only file that touches hiredis (STYLE A1.7).
///
/// Feed it bytes as they arrive; take replies out with ``next()`` until it returns `nil` (needs more bytes).
/// Not thread-safe: one reader belongs to one connection on one event loop.
public final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        guard let reader = redisReaderCreate() else { fatalError("hiredis: out of memory creating a reader") }
        self.reader = reader
    }

    deinit {
        redisReaderFree(self.reader)
    }

    /// Adds received bytes.
    public func feed(_ buffer: ByteBuffer) throws(RESPError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(self.reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw RESPError(message: self.lastError) }
    }

    /// The next complete reply, or `nil` when more bytes are needed.
    public func next() throws(RESPError) -> RESPValue? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(self.reader, &raw) == REDIS_OK else {
            throw RESPError(message: self.lastError)
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.copy(raw.assumingMemoryBound(to: redisReply.self))
    }

    private var lastError: String {
        withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
            let text = bytes.prefix { $0 != 0 }
            return String(decoding: text, as: UTF8.self)
        }
    }

    private static func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            var buffer = ByteBufferAllocator().buffer(capacity: Int(r.len))
            if let str = r.str { buffer.writeBytes(UnsafeRawBufferPointer(start: str, count: Int(r.len))) }
            return .bulkString(buffer)
        case REDIS_REPLY_STATUS:
            return .simpleString(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_ERROR:
            return .error(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_INTEGER:
            return .integer(r.integer)
        case REDIS_REPLY_NIL:
            return .bulkString(nil)
        case REDIS_REPLY_ARRAY:
            guard let elements = r.element else { return .array([]) }
            return .array((0..<Int(r.elements)).map { index in Self.copy(elements[index]!) })
        default:
            return .error("unsupported reply type \(r.type)")
        }
    }
}
