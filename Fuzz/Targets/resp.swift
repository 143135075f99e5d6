// Fuzz target `resp`: RESPReader (hiredis behind Sources/PorticoRESP/RESPReader.swift) on arbitrary bytes cut
// at arbitrary points, and Envelope decoding (Sources/PorticoRelay/Envelope.swift) of every pub/sub payload.
// Never crashes or leaks (ASan/LeakSanitizer), and:
// - the replies (or the protocol error) do not depend on how the bytes were cut into reads;
// - RESPEncoder's command bytes read back as the same array of bulk strings;
// - a decoded Envelope encodes to bytes that decode to the same Envelope.

import NIOCore
import PorticoRelay

@testable import PorticoRESP

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var choices = FuzzChoices(bytes)
    RESPTarget.run(bytes, choices: &choices)
    return 0
}

enum RESPTarget {
    enum Read: Equatable {
        case replies([RESPValue])
        case failed([RESPValue], RESPError)
    }

    static func read(_ bytes: UnsafeRawBufferPointer, splits: [Range<Int>]) -> Read {
        let reader = RESPReader()
        var replies: [RESPValue] = []
        do {
            for range in splits {
                try reader.feed(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[range])))
                while let reply = try reader.next() { replies.append(reply) }
            }
        } catch {
            return .failed(replies, error)
        }
        return .replies(replies)
    }

    static func run(_ bytes: UnsafeRawBufferPointer, choices: inout FuzzChoices) {
        let whole = Self.read(bytes, splits: bytes.isEmpty ? [] : [0..<bytes.count])
        let split = Self.read(bytes, splits: choices.splits(of: bytes.count))
        switch (whole, split) {
        case (.replies(let a), .replies(let b)):
            if a != b { finding("replies differ when split:\n  \(a)\n  \(b)") }
        case (.failed(let a, _), .failed(let b, _)):
            // hiredis reports the error at the read that completes the bad item: the replies before it agree.
            if a != b { finding("replies before the error differ when split:\n  \(a)\n  \(b)") }
        default:
            finding("one read fails and the other does not:\n  \(whole)\n  \(split)")
        }
        let replies: [RESPValue]
        switch whole {
        case .replies(let values), .failed(let values, _): replies = values
        }
        for reply in replies {
            Self.visit(reply)
        }
        // The input itself as an envelope, and as the arguments of a command.
        Self.checkEnvelope(ByteBuffer(bytes: bytes))
        Self.checkEncoder(bytes, choices: &choices)
    }

    /// Pub/sub pushes as RedisSubscriber reads them (RESP2: ["message", channel, payload] or
    /// ["pmessage", pattern, channel, payload]); the payload is an envelope from another node.
    static func visit(_ value: RESPValue) {
        switch value {
        case .array(let parts?):
            if parts.count == 3, case .bulkString(let payload?) = parts[2] { Self.checkEnvelope(payload) }
            if parts.count == 4, case .bulkString(let payload?) = parts[3] { Self.checkEnvelope(payload) }
            for part in parts { Self.visit(part) }
        case .error:
            _ = Redirection(value)
        default:
            break
        }
    }

    static func checkEnvelope(_ buffer: ByteBuffer) {
        guard let envelope = Envelope(decoding: buffer) else { return }
        let encoded = envelope.encoded()
        guard let again = Envelope(decoding: encoded) else {
            finding("an envelope's own bytes do not decode: \(envelope)")
        }
        if again != envelope { finding("envelope round trip changed it:\n  \(envelope)\n  \(again)") }
    }

    static func checkEncoder(_ bytes: UnsafeRawBufferPointer, choices: inout FuzzChoices) {
        // Arguments: the input cut at the places FuzzChoices picks (empty arguments included).
        var arguments: [ByteBuffer] = []
        var start = 0
        while start < bytes.count, arguments.count < 64 {
            let end = min(bytes.count, start + choices.below(24))
            arguments.append(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<end])))
            start = end
        }
        guard !arguments.isEmpty else { return }
        var wire = ByteBuffer()
        RESPEncoder.encode(arguments, into: &wire)
        // (Checked outside the `do`: a `Never` call inside a typed-throws `do` crashes this compiler's SIL verifier.)
        let reader = RESPReader()
        let first: RESPValue?
        let second: RESPValue?
        do {
            try reader.feed(wire)
            first = try reader.next()
            second = try reader.next()
        } catch {
            finding("an encoded command does not parse: \(error)")
        }
        if first != .array(arguments.map { .bulkString($0) }) {
            finding("an encoded command reads back as \(String(describing: first)), not \(arguments)")
        }
        if let second { finding("an encoded command reads back as two replies: \(second)") }
    }
}
