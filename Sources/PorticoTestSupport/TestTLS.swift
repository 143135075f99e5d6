import NIOSSL

/// TLS settings for the test clients: trust `caPath`, send `serverName` as SNI (and verify it).
public struct TestTLS: Sendable {
    public var caPath: String
    public var serverName: String?

    public init(caPath: String, serverName: String?) {
        self.caPath = caPath
        self.serverName = serverName
    }

    func makeHandler() throws -> NIOSSLClientHandler {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(self.caPath)
        configuration.applicationProtocols = ["http/1.1"]
        if self.serverName == nil { configuration.certificateVerification = .noHostnameVerification }
        return try NIOSSLClientHandler(
            context: NIOSSLContext(configuration: configuration),
            serverHostname: self.serverName
        )
    }
}
