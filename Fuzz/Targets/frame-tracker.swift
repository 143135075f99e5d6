// Fuzz target `frame-tracker`: WebSocketFrameTracker (Sources/PorticoProxy/Tunnel) on arbitrary byte streams cut
// at arbitrary points. The first input byte picks the sender, the negotiated RSV rule and the message size limit;
// the rest is the stream. The tracker must agree with a plain whole-stream reference reading of RFC 6455 (frames,
// messages, Close code, the violation and the offset of the frame that caused it), however the stream is cut,
// and must keep what its doc comments promise: on a violation `forwardable` ends where the offending frame
// starts (or `isBoundaryClean` is false and part of its header already went out in an earlier read), and with
// `stopAtBoundary` it stops only on a frame boundary.

import NIOCore

@testable import PorticoProxy

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let control = bytes.first else { return 0 }
    var choices = FuzzChoices(bytes)
    FrameTrackerTarget.run(
        control: control,
        stream: UnsafeRawBufferPointer(rebasing: bytes.dropFirst()),
        choices: &choices
    )
    return 0
}

enum FrameTrackerTarget {
    static let limits = [0, 1, 125, 126, 1000, 65_536, 1 << 20, Int.max]

    static func run(control: UInt8, stream: UnsafeRawBufferPointer, choices: inout FuzzChoices) {
        let sender: WebSocketFrameTracker.Sender = control & 1 == 0 ? .client : .server
        let reserved: WebSocketFrameTracker.ReservedBits =
            switch (control >> 1) & 3 {
            case 1: .perMessageDeflate
            case 2: .any
            default: .none
            }
        let limit = Self.limits[Int(control >> 3) & 7]
        let model = Reference(sender: sender, reserved: reserved, maxMessageBytes: limit, stream: stream)
        func make() -> WebSocketFrameTracker {
            WebSocketFrameTracker(sender: sender, maxMessageBytes: limit, reservedBits: reserved)
        }
        let context = "sender \(sender), rsv \(reserved), limit \(limit), \(stream.count) bytes"

        // A: the whole stream in one read.
        var whole = make()
        let outcome = whole.consume(ByteBuffer(bytes: stream))
        if let violation = model.violation {
            guard let found = outcome.violation else {
                finding("missed \(violation) at \(violation.offset): \(context)")
            }
            if found.code != violation.code || outcome.forwardable != violation.offset || !outcome.isBoundaryClean {
                finding("violation \(found) forwardable \(outcome.forwardable); reference \(violation): \(context)")
            }
        } else {
            if let found = outcome.violation {
                finding("spurious violation \(found) at \(outcome.forwardable): \(context)")
            }
            if outcome.forwardable != stream.count {
                finding("forwarded \(outcome.forwardable) of \(stream.count): \(context)")
            }
            if whole.isAtFrameBoundary != model.endsOnBoundary {
                finding("isAtFrameBoundary \(whole.isAtFrameBoundary), reference \(model.endsOnBoundary): \(context)")
            }
        }
        Self.compareCounts(whole, model, "whole", context)

        // B: the same stream cut into reads.
        var split = make()
        var forwarded = 0
        for range in choices.splits(of: stream.count) {
            let piece = split.consume(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: stream[range])))
            if piece.forwardable < 0 || piece.forwardable > range.count {
                finding("forwardable \(piece.forwardable) of \(range.count)")
            }
            if let found = piece.violation {
                guard let violation = model.violation else {
                    finding("spurious violation \(found) when split: \(context)")
                }
                if found.code != violation.code { finding("split: \(found), reference \(violation): \(context)") }
                if piece.isBoundaryClean {
                    if range.lowerBound + piece.forwardable != violation.offset {
                        finding(
                            "split: clean stop at \(range.lowerBound + piece.forwardable), frame at \(violation.offset): \(context)"
                        )
                    }
                } else if piece.forwardable != 0 || violation.offset >= range.lowerBound {
                    finding(
                        "split: unclean stop forwarding \(piece.forwardable) in read \(range), frame at \(violation.offset): \(context)"
                    )
                }
                forwarded += piece.forwardable
                Self.compareCounts(split, model, "split", context)
                if split.bytes != forwarded { finding("bytes \(split.bytes), forwarded \(forwarded)") }
                return
            }
            if piece.forwardable != range.count {
                finding("split: forwarded \(piece.forwardable) of \(range.count), no violation")
            }
            forwarded += piece.forwardable
        }
        if model.violation != nil { finding("split: missed \(model.violation!): \(context)") }
        Self.compareCounts(split, model, "split", context)
        if split.bytes != forwarded { finding("bytes \(split.bytes), forwarded \(forwarded)") }

        // C: as TunnelHandler reads while a Close waits: stop at a frame boundary, then go on with the rest.
        var stopping = make()
        for range in choices.splits(of: stream.count) {
            let piece = stopping.consume(
                ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: stream[range])),
                stopAtBoundary: true
            )
            if piece.violation != nil { return }  // compared above
            if piece.forwardable < range.count {
                let at = range.lowerBound + piece.forwardable
                if !stopping.isAtFrameBoundary || !model.boundaries.contains(at) {
                    finding("stopAtBoundary stopped at \(at), not a frame boundary: \(context)")
                }
                let rest = stream[(range.lowerBound + piece.forwardable)..<range.upperBound]
                if stopping.consume(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: rest))).violation != nil {
                    return
                }
            }
        }
        Self.compareCounts(stopping, model, "stopAtBoundary", context)
    }

    static func compareCounts(_ tracker: WebSocketFrameTracker, _ model: Reference, _ run: String, _ context: String) {
        if tracker.frames != model.frames || tracker.messages != model.messages || tracker.sawClose != model.sawClose
            || tracker.closeCode != model.closeCode
        {
            finding(
                "\(run): frames \(tracker.frames) messages \(tracker.messages) close \(tracker.sawClose) \(String(describing: tracker.closeCode)); "
                    + "reference \(model.frames) \(model.messages) \(model.sawClose) \(String(describing: model.closeCode)): \(context)"
            )
        }
    }

    /// RFC 6455 §5.2 read straight through a whole stream, checks in the tracker's order.
    struct Reference {
        struct Violation: CustomStringConvertible {
            var code: UInt16
            var offset: Int
            var why: String
            var description: String { "\(self.code) (\(self.why))" }
        }
        var frames = 0
        var messages = 0
        var sawClose = false
        var closeCode: UInt16?
        var violation: Violation?
        /// Offsets where no frame is partly read.
        var boundaries: Set<Int> = [0]
        var endsOnBoundary = true

        init(
            sender: WebSocketFrameTracker.Sender,
            reserved: WebSocketFrameTracker.ReservedBits,
            maxMessageBytes: Int,
            stream: UnsafeRawBufferPointer
        ) {
            var offset = 0
            var inMessage = false
            var messageBytes: UInt64 = 0
            while offset < stream.count {
                let start = offset
                self.endsOnBoundary = false
                guard stream.count - start >= 2 else { return }
                let first = stream[start]
                let second = stream[start + 1]
                let masked = second & 0x80 != 0
                let lengthBytes = second & 0x7F == 126 ? 2 : second & 0x7F == 127 ? 8 : 0
                let headerLength = 2 + lengthBytes + (masked ? 4 : 0)
                guard stream.count - start >= headerLength else { return }
                var length = UInt64(second & 0x7F)
                if lengthBytes > 0 {
                    length = 0
                    for index in 0..<lengthBytes { length = length << 8 | UInt64(stream[start + 2 + index]) }
                }
                func fail(_ code: UInt16, _ why: String) {
                    self.violation = Violation(code: code, offset: start, why: why)
                }
                if lengthBytes == 8 && length >> 63 != 0 {
                    fail(1002, "length")
                    return
                }
                if sender == .client && !masked {
                    fail(1002, "unmasked")
                    return
                }
                let opcode = first & 0x0F
                let fin = first & 0x80 != 0
                let rsv = first & 0x70
                if rsv != 0 {
                    switch reserved {
                    case .none:
                        fail(1002, "rsv")
                        return
                    case .perMessageDeflate:
                        if rsv != 0x40 || !(opcode == 1 || opcode == 2) {
                            fail(1002, "rsv")
                            return
                        }
                    case .any: break
                    }
                }
                self.frames += 1
                switch opcode {
                case 0, 1, 2:
                    if opcode == 0 && !inMessage {
                        fail(1002, "continuation")
                        return
                    }
                    if opcode != 0 && inMessage {
                        fail(1002, "interleaved")
                        return
                    }
                    if opcode != 0 { messageBytes = 0 }
                    inMessage = true
                    messageBytes += length
                    if messageBytes > UInt64(maxMessageBytes) {
                        fail(1009, "too big")
                        return
                    }
                    if fin {
                        inMessage = false
                        self.messages += 1
                    }
                case 8, 9, 10:
                    if !fin || length > 125 {
                        fail(1002, "control")
                        return
                    }
                    if opcode == 8 {
                        self.sawClose = true
                        let payload = start + headerLength
                        if length >= 2 && stream.count - payload >= 2 {
                            let mask =
                                masked ? [stream[start + headerLength - 4], stream[start + headerLength - 3]] : [0, 0]
                            self.closeCode =
                                UInt16(stream[payload] ^ mask[0]) << 8 | UInt16(stream[payload + 1] ^ mask[1])
                        }
                    }
                default:
                    fail(1002, "opcode")
                    return
                }
                let end = UInt64(start + headerLength) + length
                guard end <= UInt64(stream.count) else { return }
                offset = Int(end)
                self.boundaries.insert(offset)
                self.endsOnBoundary = true
            }
        }
    }
}
