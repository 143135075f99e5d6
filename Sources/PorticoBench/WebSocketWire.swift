import Histogram
import NIOCore

/// The client side of RFC 6455 that the generators need: the upgrade request, masked frames out, frames in.
enum WebSocketWire {
    static func upgradeRequest(host: String, path: String) -> ByteBuffer {
        ByteBuffer(
            string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    }

    /// A masked frame (opcode 0x1 text, 0x2 binary) with FIN set.
    static func frame(opcode: UInt8, payload: some Collection<UInt8>) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        let size = payload.count
        if size < 126 {
            frame.writeInteger(UInt8(0x80 | size))
        } else if size <= 0xFFFF {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(size))
        } else {
            frame.writeInteger(UInt8(0x80 | 127))
            frame.writeInteger(UInt64(size))
        }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame.writeBytes(key)
        frame.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset % 4] })
        return frame
    }

    /// Reads the response head off `buffer`: `true` for a 101, `false` for anything else, `nil` while incomplete.
    static func readHandshake(_ buffer: inout ByteBuffer) -> Bool? {
        guard let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        let upgraded = buffer.readableBytesView.starts(with: Array("HTTP/1.1 101".utf8))
        buffer.moveReaderIndex(to: end.upperBound)
        return upgraded
    }

    /// The next whole unmasked server frame in `buffer`, consumed; `nil` until one is complete.
    static func nextFrame(_ buffer: inout ByteBuffer) -> (opcode: UInt8, payload: ByteBuffer)? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        var length = Int(second & 0x7F)
        var header = 2
        if length == 126 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(value)
            header = 4
        } else if length == 127 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            length = Int(value)
            header = 10
        }
        guard buffer.readableBytes >= header + length else { return nil }
        buffer.moveReaderIndex(forwardBy: header)
        guard let payload = buffer.readSlice(length: length) else { return nil }
        return (first & 0x0F, payload)
    }
}

/// Latencies in microseconds, with HdrHistogram (3 significant digits, up to 10 minutes).
struct Latencies: Sendable {
    private var histogram = Histogram<UInt64>(
        highestTrackableValue: 600_000_000,
        numberOfSignificantValueDigits: .three
    )

    mutating func record(since start: NIODeadline) {
        self.record(micros: (NIODeadline.now() - start).nanoseconds / 1000)
    }

    mutating func record(micros: Int64) {
        _ = self.histogram.record(UInt64(clamping: max(0, micros)))
    }

    mutating func add(_ other: Latencies) {
        self.histogram.add(other.histogram)
    }

    var count: UInt64 { self.histogram.totalCount }

    /// `p` in 0…100, in milliseconds.
    func milliseconds(atPercentile p: Double) -> Double {
        self.count == 0 ? 0 : Double(self.histogram.valueAtPercentile(p)) / 1000
    }

    /// `p50=…ms p99=…ms p99.9=…ms`.
    var summary: String {
        "p50=\(self.milliseconds(atPercentile: 50))ms p99=\(self.milliseconds(atPercentile: 99))ms "
            + "p99.9=\(self.milliseconds(atPercentile: 99.9))ms"
    }
}
