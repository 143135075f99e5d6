import NIOCore
import NIOPosix

extension ClientBootstrap {
    /// Connects to an IP literal directly and resolves anything else: an address skips the resolver.
    ///
    /// - Parameters:
    ///   - host: an IPv4/IPv6 literal or a host name.
    ///   - port: the port.
    public func connect(hostOrAddress host: String, port: Int) -> EventLoopFuture<any Channel> {
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            return self.connect(to: address)
        }
        return self.connect(host: host, port: port)
    }
}
