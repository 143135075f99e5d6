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
    /// The most elements one array may announce. hiredis allocates the element table as soon as it reads
    /// `*N`, before any element arrives: `*2147483647` alone asked for 16 GiB (a fuzz finding). Nothing the
    /// relay reads comes near this (pub/sub pushes have 3–4 elements, `CLUSTER SLOTS` one per shard).
    public static let maximumArrayCount = 1 << 20

    private let reader: UnsafeMutablePointer<redisReader>
    /// hiredis's default reply functions with `createArray` guarded; one copy per reader, freed with it.
    private let functions: UnsafeMutablePointer<redisReplyObjectFunctions>
    /// Set by the guard when it refuses an array, so the error names the cause instead of hiredis's
    /// "Out of memory".
    fileprivate var refusedArrayCount: Int?

    public init() {
        self.functions = .allocate(capacity: 1)
        self.functions.initialize(to: replyFunctions)
        guard let reader = redisReaderCreateWithFunctions(self.functions) else {
            fatalError("hiredis: out of memory creating a reader")
        }
        self.reader = reader
        // hiredis hands privdata to every read task; the guard finds this reader through it. Unretained:
        // the reader (and so every task) is freed in deinit, before self is gone.
        self.reader.pointee.privdata = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        redisReaderFree(self.reader)
        self.functions.deinitialize(count: 1)
        self.functions.deallocate()
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
        if let count = self.refusedArrayCount {
            return "an array of \(count) elements (at most \(Self.maximumArrayCount))"
        }
        return withUnsafeBytes(of: self.reader.pointee.errstr) { bytes in
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

/// hiredis's own reply functions (read once from a default reader), with `createArray` replaced by
/// ``guardedCreateArray``.
private let replyFunctions: redisReplyObjectFunctions = {
    guard let probe = redisReaderCreate() else { fatalError("hiredis: out of memory creating a reader") }
    defer { redisReaderFree(probe) }
    var functions = probe.pointee.fn.pointee
    functions.createArray = guardedCreateArray
    return functions
}()

private let defaultCreateArray: @convention(c) (UnsafePointer<redisReadTask>?, Int32) -> UnsafeMutableRawPointer? = {
    guard let probe = redisReaderCreate(), let create = probe.pointee.fn.pointee.createArray else {
        fatalError("hiredis: no default createArray")
    }
    redisReaderFree(probe)
    return create
}()

/// Refuses a negative or huge element count before hiredis allocates its table; hiredis then fails the
/// read (returning NULL is its out-of-memory path) and ``RESPReader`` reports why.
private func guardedCreateArray(_ task: UnsafePointer<redisReadTask>?, _ count: Int32) -> UnsafeMutableRawPointer? {
    guard count >= 0, Int(count) <= RESPReader.maximumArrayCount else {
        if let owner = task?.pointee.privdata {
            Unmanaged<RESPReader>.fromOpaque(owner).takeUnretainedValue().refusedArrayCount = Int(count)
        }
        return nil
    }
    return defaultCreateArray(task, count)
}
