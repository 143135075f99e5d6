import NIOCore

/// Receive buffer sizes for what the proxy reads. NIO keeps each channel's last receive buffer for its next
/// read, so the initial size is memory every idle connection holds: NIO's default (2 KiB) cost 4 KiB per idle
/// WebSocket, one buffer per side. A read that fills the buffer doubles the next one (up to 64 KiB), so bodies
/// and busy tunnels grow it within a few reads of the same readable event.
enum ReceiveBuffers {
    /// Client connections: curl and wrk send request heads under 100 bytes, browsers 400–800.
    static let downstream = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
    /// Backend connections: a 101 answer to a handshake or a small response fits in 256 bytes.
    static let upstream = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
}
