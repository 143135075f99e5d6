import NIOCore
import NIOHTTP1
import NIOSSL
import PorticoConfig
import PorticoProxy
import PorticoTestSupport
import Testing

@Suite(.serialized) struct TLSTests {
    static func yaml(
        _ b: TestBackend,
        tlsPort: Int,
        certificates: [(cert: String, key: String)],
        extra: String = ""
    )
        -> String
    {
        """
        listeners:
          - address: "LISTEN"
            redirect_https: true
          - address: "127.0.0.1:\(tlsPort)"
            tls:
              certificates:
        \(certificates.map { "        - { cert: \"\($0.cert)\", key: \"\($0.key)\" }" }.joined(separator: "\n"))
        admin: { address: "ADMIN" }
        routes:
          - pool: web
            hsts: true
            websocket: { idle_timeout: 60s }
        pools:
          web: { backends: [{ address: "\(b.address)", id: web }] }
        \(extra)
        """
    }

    @Test func sniPicksTheCertificateAndWSSWorksEndToEnd() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let chat = try certs.leaf("chat", names: ["chat.test"])
        let api = try certs.leaf("api", names: ["api.test", "*.api.test"])
        let tlsPort = try freeLoopbackPort()
        try await withBackends(["web"]) { b in
            try await withRuntime(Self.yaml(b[0], tlsPort: tlsPort, certificates: [chat, api])) { portico in
                for (name, expected) in [
                    ("chat.test", "chat.test"), ("api.test", "api.test"), ("v2.api.test", "api.test"),
                ] {
                    let client = try await HTTPTestClient.connect(
                        port: tlsPort,
                        tls: TestTLS(caPath: certs.caPath, serverName: name)
                    )
                    let response = try await client.request(.GET, "/")
                    #expect(response.status == 200)
                    #expect(response.body.contains("header: x-forwarded-proto: https"))
                    #expect(response.headers.first(name: "strict-transport-security") == "max-age=31536000")
                    let certificate = try await client.peerCertificate()
                    #expect(certificate?.description.contains(expected) == true, "\(name)")
                    await client.close()
                }
                // No SNI: the first certificate is the default.
                let bare = try await HTTPTestClient.connect(
                    port: tlsPort,
                    tls: TestTLS(caPath: certs.caPath, serverName: nil)
                )
                #expect(try await bare.request(.GET, "/").status == 200)  // the handshake happens with the first write
                #expect(try await bare.peerCertificate()?.description.contains("chat.test") == true)
                await bare.close()
                // wss:// end to end.
                let socket = try await WebSocketTestClient.connect(
                    port: tlsPort,
                    tls: TestTLS(caPath: certs.caPath, serverName: "chat.test")
                )
                #expect(socket.status == 101)
                try await socket.send(binary: Array(repeating: 42, count: 100_000))
                #expect(try await socket.receiveMessage()?.payload.count == 100_000)
                await socket.close()
                // Plain HTTP on the same route gets no HSTS.
                let plain = try await RawHTTPClient.send(
                    "GET /x?y=1 HTTP/1.1\r\nHost: chat.test:8080\r\nConnection: close\r\n\r\n",
                    port: portico.port
                )
                #expect(plain.statuses == [308])
                #expect(plain.text.contains("location: https://chat.test:\(tlsPort)/x?y=1"))
                // The redirect validates Host (no header injection into Location) and never reads a body: a body
                // would otherwise be parsed as the next request on a keep-alive connection.
                for badHost in ["chat.test/evil", "evil@chat.test", "a\tb", "chat.test:80x"] {
                    let bad = try await RawHTTPClient.send(
                        "GET / HTTP/1.1\r\nHost: \(badHost)\r\n\r\n",
                        port: portico.port
                    )
                    #expect(bad.statuses == [400], "\(badHost): \(bad.text)")
                }
                let withBody = try await RawHTTPClient.send(
                    "POST /form HTTP/1.1\r\nHost: chat.test\r\nContent-Length: 36\r\n\r\n"
                        + "GET /hidden HTTP/1.1\r\nHost: chat.test\r\n\r\n",
                    port: portico.port
                )
                #expect(withBody.statuses == [308], "\(withBody.text)")
                #expect(withBody.closedByServer)
                #expect(b[0].stats.requests == 4)
            }
        }
    }

    @Test func reloadServesANewCertificateToNewConnections() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let first = try certs.leaf("site", names: ["site.test"])
        let tlsPort = try freeLoopbackPort()
        try await withBackends(["web"]) { b in
            let yaml = Self.yaml(b[0], tlsPort: tlsPort, certificates: [first])
            try await withRuntime(yaml) { portico in
                let tls = TestTLS(caPath: certs.caPath, serverName: "site.test")
                let old = try await HTTPTestClient.connect(port: tlsPort, tls: tls)
                #expect(try await old.request(.GET, "/").status == 200)
                let oldSerial = try await old.peerCertificate()?.serialNumber
                // Same paths, new certificate (a renewal), then reload.
                try certs.leaf("site", names: ["site.test", "www.site.test"])
                #expect(try await portico.admin("POST", "/reload").status == 200)
                let fresh = try await HTTPTestClient.connect(port: tlsPort, tls: tls)
                #expect(try await fresh.request(.GET, "/").status == 200)
                let newSerial = try await fresh.peerCertificate()?.serialNumber
                #expect(oldSerial != nil && newSerial != nil && oldSerial != newSerial)
                // The connection made before the reload still works.
                #expect(try await old.request(.GET, "/").status == 200)
                #expect(try await fresh.request(.GET, "/").status == 200)
                await old.close()
                await fresh.close()
            }
        }
    }

    @Test func checkRefusesBadTLSMaterial() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let good = try certs.leaf("good", names: ["good.test"])
        let other = try certs.leaf("other", names: ["other.test"])
        let expired = try certs.leaf("expired", names: ["old.test"], days: 0)
        try await Task.sleep(for: .milliseconds(1100))
        func errors(_ pairs: [(cert: String, key: String)]) -> [ConfigurationError] {
            var configuration = PorticoConfiguration(
                listeners: [ListenerConfiguration(address: HostPort(host: "127.0.0.1", port: 8443))],
                routes: [RouteConfiguration(pool: "p")],
                pools: [
                    PoolConfiguration(
                        name: "p",
                        backends: [BackendConfiguration(address: HostPort(host: "127.0.0.1", port: 9))]
                    )
                ]
            )
            configuration.listeners[0].tls = ListenerTLSConfiguration(
                certificates: pairs.map { .init(cert: $0.cert, key: $0.key) }
            )
            return configuration.checkTLSMaterial()
        }
        #expect(errors([good]).isEmpty)
        let missing = errors([(certs.directory + "/nope.pem", good.key)])
        #expect(missing.first?.path == "listeners[0].tls.certificates[0].cert")
        #expect(missing.first?.message.contains("cannot read") == true)
        let mismatch = errors([(good.cert, other.key)])
        #expect(mismatch.first?.path == "listeners[0].tls.certificates[0].key")
        #expect(mismatch.first?.message.contains("does not match") == true)
        let stale = errors([expired])
        #expect(stale.first?.message.contains("expired on") == true)
        let notPEM = errors([(certs.caPath.replacingOccurrences(of: "ca.pem", with: "good.ext"), good.key)])
        #expect(notPEM.first?.message.contains("not a PEM certificate") == true)
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

@Suite(.serialized) struct UpstreamTLSTests {
    @Test func tlsToBackendsIsVerified() async throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let leaf = try certs.leaf("backend", names: ["backend.internal"])
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(leaf.cert).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: leaf.key, format: .pem))
        )
        server.applicationProtocols = ["http/1.1"]
        let backend = try await TestBackend.start(name: "secure", tls: try NIOSSLContext(configuration: server))
        defer { Task { await backend.stop() } }
        func yaml(serverName: String) -> String {
            """
            listeners: [{ address: "LISTEN" }]
            routes: [{ pool: secure }]
            pools:
              secure:
                retries: 0
                tls: { ca: "\(certs.caPath)", server_name: "\(serverName)" }
                backends: [{ address: "\(backend.address)" }]
            """
        }
        try await withProxy(yaml(serverName: "backend.internal")) { proxy in
            let response = try await HTTPTestClient.request(port: proxy.port, .GET, "/over-tls")
            #expect(response.status == 200)
            #expect(response.body.contains("uri: /over-tls"))
        }
        // A backend whose certificate does not name the server_name is refused.
        try await withProxy(yaml(serverName: "someone.else")) { proxy in
            let status = try await HTTPTestClient.request(port: proxy.port, .GET, "/").status
            #expect(status == 502)
        }
    }
}
