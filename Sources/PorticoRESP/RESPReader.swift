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
///
/// Stored `var`s are `@exclusivity(unchecked)`: only that connection's event loop touches them, and never two
/// accesses to one at once (the tests ran with the runtime's checks on first); those checks were about 13% of the
/// relay's CPU (perf, BENCHMARKS.md).
///
/// hiredis parses; its reply tree is never built. Our reply-object functions record each element as a token
/// (kind, and for strings a range in one buffer per reply), so a pub/sub push (an array of three strings)
/// costs one buffer and one array, its strings slices of that buffer, instead of hiredis's five mallocs and
/// a copy of each string into a buffer of its own.
public final class RESPReader {
    /// The most elements one array may announce. hiredis allocates the element table as soon as it reads
    /// `*N`, before any element arrives: `*2147483647` alone asked for 16 GiB (a fuzz finding). Nothing the
    /// relay reads comes near this (pub/sub pushes have 3–4 elements, `CLUSTER SLOTS` one per shard).
    public static let maximumArrayCount = 1 << 20

    private let reader: UnsafeMutablePointer<redisReader>
    /// The reply-object functions (tokens, see below); one copy per reader, freed with it.
    private let functions: UnsafeMutablePointer<redisReplyObjectFunctions>
    /// Set by the guard when it refuses an array, so the error names the cause instead of hiredis's
    /// "Out of memory".
    @exclusivity(unchecked) fileprivate var refusedArrayCount: Int?

    /// The elements of the reply being parsed, in the order hiredis creates them (an array before its
    /// elements, depth first).
    @exclusivity(unchecked) fileprivate var tokens: [Token] = []
    /// The bytes of the current reply's strings; a new one per reply (slices handed out keep theirs alive).
    @exclusivity(unchecked) fileprivate var arena = ByteBuffer()

    fileprivate enum Token {
        case string(kind: Int32, start: Int, length: Int)
        case array(count: Int)
        case integer(Int64)
        case null
    }

    public init() {
        self.functions = .allocate(capacity: 1)
        self.functions.initialize(to: replyFunctions)
        guard let reader = redisReaderCreateWithFunctions(self.functions) else {
            fatalError("hiredis: out of memory creating a reader")
        }
        self.reader = reader
        // hiredis hands privdata to every read task; the reply functions find this reader through it. Unretained:
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
        guard raw != nil else { return nil }
        var index = 0
        let value = self.value(at: &index)
        self.tokens.removeAll(keepingCapacity: true)
        self.arena = ByteBuffer()
        return value
    }

    /// The reply whose first token is `tokens[index]`; moves `index` past it.
    private func value(at index: inout Int) -> RESPValue {
        guard index < self.tokens.count else { return .error("truncated reply") }  // never: hiredis completed it
        let token = self.tokens[index]
        index += 1
        switch token {
        case .string(let kind, let start, let length):
            switch kind {
            case REDIS_REPLY_STATUS:
                return .simpleString(self.arena.getString(at: start, length: length) ?? "")
            case REDIS_REPLY_ERROR:
                return .error(self.arena.getString(at: start, length: length) ?? "")
            default:
                return .bulkString(self.arena.getSlice(at: start, length: length))
            }
        case .array(let count):
            var elements: [RESPValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count { elements.append(self.value(at: &index)) }
            return .array(elements)
        case .integer(let value):
            return .integer(value)
        case .null:
            return .bulkString(nil)
        }
    }

    /// Records a token; the "object" hiredis keeps for it is its position, never dereferenced.
    fileprivate func add(_ token: Token) -> UnsafeMutableRawPointer? {
        self.tokens.append(token)
        return UnsafeMutableRawPointer(bitPattern: self.tokens.count)
    }

    fileprivate func addString(kind: Int32, _ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer? {
        if self.arena.capacity == 0 { self.arena.reserveCapacity(max(64, bytes.count)) }
        let start = self.arena.writerIndex
        self.arena.writeBytes(bytes)
        return self.add(.string(kind: kind, start: start, length: bytes.count))
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
}

/// The reply-object functions every reader uses: tokens instead of hiredis's tree (see ``RESPReader``).
private let replyFunctions = redisReplyObjectFunctions(
    createString: { task, str, length in
        guard let task, let reader = owner(task) else { return nil }
        return reader.addString(kind: task.pointee.type, UnsafeRawBufferPointer(start: str, count: length))
    },
    createArray: { task, count in
        guard let task, let reader = owner(task) else { return nil }
        // Refused before anything is kept for it: a huge count is a hostile or broken peer (hiredis then fails
        // the read: NULL is its out-of-memory path, and RESPReader reports why).
        guard count >= 0, Int(count) <= RESPReader.maximumArrayCount else {
            reader.refusedArrayCount = Int(count)
            return nil
        }
        return reader.add(.array(count: Int(count)))
    },
    createInteger: { task, value in
        guard let task, let reader = owner(task) else { return nil }
        return reader.add(.integer(value))
    },
    createNil: { task in
        guard let task, let reader = owner(task) else { return nil }
        return reader.add(.null)
    },
    freeObject: { _ in }  // tokens belong to the reader, which resets them per reply
)

/// The reader a task belongs to (hiredis copies the reader's privdata into every task).
private func owner(_ task: UnsafePointer<redisReadTask>) -> RESPReader? {
    guard let privdata = task.pointee.privdata else { return nil }
    return Unmanaged<RESPReader>.fromOpaque(privdata).takeUnretainedValue()
}
