import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

@testable import PorticoProxy

@Suite(.serialized) struct OperationsTests {
    static func pool(_ b: [TestBackend], extra: String = "") -> String {
        """
        listeners: [{ address: "LISTEN" }]
        admin: { address: "ADMIN" }
        routes:
          - pool: web
            websocket: { idle_timeout: 60s }
        pools:
          web:
        \(extra)
            backends: [\(b.map { "{ address: \"\($0.address)\", id: \($0.name) }" }.joined(separator: ", "))]
        """
    }

    @Test func failingHealthChecksStopTheWork() async throws {
        try await withBackends(["a", "b"]) { b in
            let yaml = Self.pool(
                b,
                extra: "    health: { path: /healthz, interval: 100ms, timeout: 100ms, rise: 2, fall: 2 }"
            )
            try await withRuntime(yaml) { portico in
                #expect(await eventually { b[0].stats.healthChecks >= 2 && b[1].stats.healthChecks >= 2 })
                b[0].setHealthy(false)
                // Within interval × fall (200 ms, plus a tick) a is down and gets no more requests.
                try await Task.sleep(for: .milliseconds(500))
                let before = b[0].stats.requests
                for _ in 0..<10 {
                    let response = try await HTTPTestClient.request(port: portico.port, .GET, "/")
                    #expect(response.headers.first(name: "x-backend") == "b")
                }
                #expect(b[0].stats.requests == before)
                let status = try await portico.admin("GET", "/status").body
                #expect(status.contains(#""id":"a","address":"\#(b[0].address)","weight":1,"state":"down""#))
                b[0].setHealthy(true)
                #expect(
                    await eventually {
                        (try? await portico.admin("GET", "/status").body.contains(#""state":"down""#)) == false
                    }
                )
            }
        }
    }

    @Test func pauseHoldsRequestsUntilResume() async throws {
        try await withBackends(["a"]) { b in
            try await withRuntime(Self.pool(b, extra: "    hold: { timeout: 5s, max_queued: 100 }")) { portico in
                #expect(try await portico.admin("POST", "/pools/web/pause").status == 200)
                async let held = HTTPTestClient.request(port: portico.port, .GET, "/waiting")
                #expect(
                    await eventually {
                        (try? await portico.admin("GET", "/status").body.contains(#""held":1"#)) == true
                    }
                )
                #expect(b[0].stats.requests == 0)
                #expect(try await portico.admin("POST", "/pools/web/resume").status == 200)
                let response = try await held
                #expect(response.status == 200)
                #expect(response.body.contains("uri: /waiting"))
            }
        }
    }

    @Test func holdTimesOutWith503() async throws {
        try await withBackends(["a"]) { b in
            try await withRuntime(Self.pool(b, extra: "    hold: { timeout: 300ms, max_queued: 1 }")) { portico in
                _ = try await portico.admin("POST", "/pools/web/pause")
                async let first = HTTPTestClient.request(port: portico.port, .GET, "/first")
                #expect(
                    await eventually {
                        (try? await portico.admin("GET", "/status").body.contains(#""held":1"#)) == true
                    }
                )
                let full = try await HTTPTestClient.request(port: portico.port, .GET, "/second")
                #expect(full.status == 503)  // the queue holds one
                let timedOut = try await first
                #expect(timedOut.status == 503)
                #expect(timedOut.headers.first(name: "retry-after") != nil)
                #expect(b[0].stats.requests == 0)
            }
        }
    }

    @Test func requestsWaitForABackendToComeBack() async throws {
        try await withBackends(["a"]) { b in
            let yaml = Self.pool(
                b,
                extra: """
                        health: { path: /healthz, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }
                        hold: { timeout: 5s, max_queued: 100 }
                    """
            )
            try await withRuntime(yaml) { portico in
                b[0].setHealthy(false)
                #expect(
                    await eventually {
                        (try? await portico.admin("GET", "/status").body.contains(#""state":"down""#)) == true
                    }
                )
                async let waiting = HTTPTestClient.request(port: portico.port, .GET, "/during-upgrade")
                try await Task.sleep(for: .milliseconds(300))
                b[0].setHealthy(true)
                let response = try await waiting
                #expect(response.status == 200)
            }
        }
    }

    @Test func passiveEjectionAfterConsecutiveFailures() async throws {
        try await withBackends(["a", "b"]) { b in
            let yaml = Self.pool(b, extra: "    passive: { failures: 2, eject: 5s }\n    retries: 0")
            try await withRuntime(yaml) { portico in
                // Both backends answer 500 for this path; round robin alternates, so each fails twice.
                for _ in 0..<4 { _ = try await HTTPTestClient.request(port: portico.port, .GET, "/status/500") }
                let status = try await portico.admin("GET", "/status").body
                #expect(status.components(#""state":"ejected""#).count == 3)
                // With every backend ejected, a request has nowhere to go.
                #expect(try await HTTPTestClient.request(port: portico.port, .GET, "/").status == 503)
            }
        }
    }

    /// Backends that configurations drop are forgotten once drained: churn (autoscaling, rolling deploys
    /// through discovery) does not grow the runtime state forever.
    @Test func departedBackendsAreForgottenOnceDrained() async throws {
        func config(_ generation: Int) -> String {
            """
            listeners: [{ address: "LISTEN" }]
            admin: { address: "ADMIN" }
            routes: [{ pool: p }]
            pools: { p: { backends: [{ address: "127.0.0.1:\(20_000 + generation)", id: "gen-\(generation)" }] } }
            """
        }
        let portico = try await RuntimeHarness(config(0))
        for generation in 1...30 {
            try portico.rewrite(config(generation))
            #expect(try await portico.admin("POST", "/reload").status == 200)
        }
        // The current backend and the one dropped by the last reload (forgotten at the next one).
        #expect(portico.runtime.store.snapshot.runtime.backendCount <= 2)
        await portico.stop()
    }

    @Test func adminTokenIsRequiredWhenSet() async throws {
        try await withBackends(["a"]) { b in
            let yaml = Self.pool(b).replacingPlaceholder(
                "admin: { address: \"ADMIN\" }",
                with: "admin: { address: \"ADMIN\", token: s3cret }"
            )
            try await withRuntime(yaml) { portico in
                let denied = try await portico.admin("GET", "/status")
                #expect(denied.status == 401)
                #expect(denied.headers.first(name: "www-authenticate") == "Bearer")
                #expect(try await portico.admin("GET", "/status", token: "wrong").status == 401)
                #expect(try await portico.admin("POST", "/reload", token: "wrong").status == 401)
                #expect(try await portico.admin("GET", "/status", token: "s3cret").status == 200)
                let config = try await portico.admin("GET", "/config", token: "s3cret").body
                #expect(!config.contains("s3cret"))
            }
        }
    }

    @Test func metricsScrape() async throws {
        try await withBackends(["a"]) { b in
            try await withRuntime(Self.pool(b)) { portico in
                _ = try await HTTPTestClient.request(port: portico.port, .GET, "/")
                let socket = try await WebSocketTestClient.connect(port: portico.port)
                try await socket.send(text: "hi")
                _ = try await socket.receiveMessage()
                let scrape = try await portico.admin("GET", "/metrics")
                #expect(scrape.status == 200)
                #expect(scrape.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
                for name in [
                    "portico_requests_total", "portico_request_duration_seconds_bucket",
                    "portico_downstream_connections",
                    "portico_tunnels_live", "portico_websocket_messages_total", "portico_backend_up",
                ] {
                    #expect(scrape.body.contains(name), "\(name) missing")
                }
                #expect(scrape.body.contains(#"portico_tunnels_live{pool="web",backend="a"} 1"#))
                // Tunnel traffic is exported when scraped: one message each way so far.
                #expect(
                    scrape.body.contains(#"portico_websocket_messages_total{pool="web",backend="a",from="client"} 1"#)
                )
                #expect(
                    scrape.body.contains(#"portico_websocket_messages_total{pool="web",backend="a",from="backend"} 1"#)
                )
                try await socket.send(text: "again")
                _ = try await socket.receiveMessage()
                let later = try await portico.admin("GET", "/metrics").body
                #expect(later.contains(#"portico_websocket_messages_total{pool="web",backend="a",from="client"} 2"#))
                await socket.close()
                let html = try await portico.admin("GET", "/")
                #expect(html.headers.first(name: "content-type")?.hasPrefix("text/html") == true)
                #expect(html.body.contains("<td>a</td>"))
            }
        }
    }

    @Test func drainSendsClose1012AndNewSocketsGoElsewhere() async throws {
        try await withBackends(["a", "b"]) { b in
            try await withRuntime(Self.pool(b, extra: "    drain_timeout: 500ms")) { portico in
                var sockets: [(String, WebSocketTestClient)] = []
                for _ in 0..<6 {
                    let socket = try await WebSocketTestClient.connect(port: portico.port)
                    try await socket.send(text: "whoami")
                    sockets.append((try await socket.receiveMessage()?.text ?? "?", socket))
                }
                let drained = try await portico.admin("POST", "/pools/web/backends/a/drain")
                #expect(drained.body.contains(#""state":"draining""#))
                for (backend, socket) in sockets where backend == "a" {
                    let close = try await socket.receive(timeout: .seconds(3))
                    #expect(close?.closeCode == 1012)
                }
                for (backend, socket) in sockets where backend == "b" {
                    try await socket.send(text: "still here")
                    #expect(try await socket.receiveMessage()?.text == "still here")
                }
                for _ in 0..<4 {
                    let socket = try await WebSocketTestClient.connect(port: portico.port)
                    try await socket.send(text: "whoami")
                    #expect(try await socket.receiveMessage()?.text == "b")
                    await socket.close()
                }
                #expect(try await portico.admin("POST", "/pools/web/backends/a/enable").status == 200)
                #expect(try await portico.admin("POST", "/pools/web/backends/zzz/drain").status == 404)
                for (_, socket) in sockets { await socket.close() }
            }
        }
    }

    @Test func shutdownClosesSocketsWith1001() async throws {
        try await withBackends(["a"]) { b in
            let harness = try await RuntimeHarness(Self.pool(b))
            let socket = try await WebSocketTestClient.connect(port: harness.port)
            try await socket.send(text: "hi")
            _ = try await socket.receiveMessage()
            let idle = try await HTTPTestClient.connect(port: harness.port)
            _ = try await idle.request(.GET, "/")
            async let slow = HTTPTestClient.request(port: harness.port, .GET, "/slow/400")
            try await Task.sleep(for: .milliseconds(100))
            await harness.runtime.server.shutdown(timeout: .seconds(5))
            #expect(try await socket.receive()?.closeCode == 1001)
            #expect(try await slow.status == 200)  // in-flight requests finish
            #expect(!idle.isActive)  // idle keep-alive connections close
            await harness.stop()
        }
    }

    @Test func reloadChangesRoutesAndRefusesBadFiles() async throws {
        try await withBackends(["a", "b"]) { b in
            let first = """
                listeners: [{ address: "LISTEN" }]
                admin: { address: "ADMIN" }
                routes: [{ pool: one }]
                pools:
                  one: { backends: [{ address: "\(b[0].address)", id: a }] }
                """
            try await withRuntime(first) { portico in
                let client = try await HTTPTestClient.connect(port: portico.port)  // keep-alive across the reload
                #expect(try await client.request(.GET, "/").headers.first(name: "x-backend") == "a")
                #expect(try await portico.admin("GET", "/status").body.contains(#""requests_total":1"#))
                try portico.rewrite(
                    first.replacingPlaceholder("pools:\n  one:", with: "pools:\n  one:\n    policy: nope\n  x:")
                )
                let refused = try await portico.admin("POST", "/reload")
                #expect(refused.status == 400)
                #expect(refused.body.contains("unknown policy"))
                #expect(try await client.request(.GET, "/").headers.first(name: "x-backend") == "a")
                // A reload that keeps backend a keeps its counters.
                try portico.rewrite(
                    first.replacingPlaceholder(
                        "routes: [{ pool: one }]",
                        with: "routes: [{ pool: one, preserve_host: false }]"
                    )
                )
                #expect(try await portico.admin("POST", "/reload").status == 200)
                #expect(try await client.request(.GET, "/").headers.first(name: "x-backend") == "a")
                #expect(try await portico.admin("GET", "/status").body.contains(#""requests_total":3"#))
                try portico.rewrite(
                    """
                    listeners: [{ address: "LISTEN" }]
                    admin: { address: "ADMIN" }
                    routes: [{ pool: two }]
                    pools:
                      two: { backends: [{ address: "\(b[1].address)", id: b }] }
                    """
                )
                let reloaded = try await portico.admin("POST", "/reload")
                #expect(reloaded.status == 200)
                #expect(reloaded.body == "{\"generation\":3}\n")
                #expect(try await client.request(.GET, "/").headers.first(name: "x-backend") == "b")
                await client.close()
            }
        }
    }
}

@Suite(.serialized) struct ZeroDowntimeReloadTests {
    @Test func fiftyReloadsUnderLoadDropNothing() async throws {
        try await withBackends(["a", "b"]) { b in
            func config(_ variant: Int) -> String {
                """
                listeners: [{ address: "LISTEN" }]
                admin: { address: "ADMIN" }
                routes:
                  - match: { headers: { x-variant: "\(variant)" } }
                    pool: web
                  - pool: web
                    websocket: { idle_timeout: 60s }
                pools:
                  web:
                    policy: \(variant % 2 == 0 ? "least_conn" : "round_robin")
                    backends: [{ address: "\(b[0].address)", id: a }, { address: "\(b[1].address)", id: b }]
                """
            }
            try await withRuntime(config(0)) { portico in
                var opened: [WebSocketTestClient] = []
                for _ in 0..<200 { opened.append(try await WebSocketTestClient.connect(port: portico.port)) }
                let sockets = opened
                let stop = ManagedStop()
                // Every socket keeps a conversation going and checks each echo.
                let conversations = Task {
                    try await withThrowingTaskGroup(of: (sent: Int, lost: Int).self) { group in
                        for (index, socket) in sockets.enumerated() {
                            group.addTask {
                                var sent = 0
                                var lost = 0
                                while !stop.isSet {
                                    let message = "s\(index)-m\(sent)"
                                    try await socket.send(text: message)
                                    sent += 1
                                    if try await socket.receiveMessage(timeout: .seconds(10))?.text != message {
                                        lost += 1
                                    }
                                    try await Task.sleep(for: .milliseconds(50))
                                }
                                return (sent, lost)
                            }
                        }
                        var totals = (sent: 0, lost: 0)
                        for try await result in group {
                            totals.sent += result.sent
                            totals.lost += result.lost
                        }
                        return totals
                    }
                }
                // HTTP load on keep-alive connections and on new ones.
                let http = Task {
                    var failures = 0
                    var done = 0
                    let client = try await HTTPTestClient.connect(port: portico.port)
                    while !stop.isSet {
                        if (try? await client.request(.GET, "/keep-alive"))?.status != 200 { failures += 1 }
                        if (try? await HTTPTestClient.request(port: portico.port, .GET, "/fresh"))?.status != 200 {
                            failures += 1
                        }
                        done += 2
                    }
                    await client.close()
                    return (done, failures)
                }
                for reload in 1...50 {
                    try portico.rewrite(config(reload))
                    let reply = try await portico.admin("POST", "/reload")
                    #expect(reply.status == 200)
                    try await Task.sleep(for: .milliseconds(40))
                }
                stop.set()
                let (sent, lost) = try await conversations.value
                let (requests, failures) = try await http.value
                #expect(lost == 0)
                #expect(sent >= 200)
                #expect(failures == 0)
                #expect(requests > 20)
                let allOpen = sockets.allSatisfy { $0.isActive }
                #expect(allOpen)
                #expect(try await portico.admin("GET", "/status").body.contains(#""generation":51"#))
                for socket in sockets { await socket.close() }
            }
        }
    }

    @Test func reloadOpensAndClosesListeners() async throws {
        try await withBackends(["a"]) { b in
            let extra = try freeLoopbackPort()
            let base = """
                listeners: [{ address: "LISTEN" }]
                admin: { address: "ADMIN" }
                routes: [{ pool: web }]
                pools: { web: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withRuntime(base) { portico in
                try portico.rewrite(
                    base.replacingPlaceholder(
                        "[{ address: \"LISTEN\" }]",
                        with: "[{ address: \"LISTEN\" }, { address: \"127.0.0.1:\(extra)\" }]"
                    )
                )
                #expect(try await portico.admin("POST", "/reload").status == 200)
                #expect(try await HTTPTestClient.request(port: extra, .GET, "/").status == 200)
                try portico.rewrite(base)
                #expect(try await portico.admin("POST", "/reload").status == 200)
                await #expect(throws: (any Error).self) { try await HTTPTestClient.request(port: extra, .GET, "/") }
                #expect(try await HTTPTestClient.request(port: portico.port, .GET, "/").status == 200)
            }
        }
    }
}

/// A stop flag shared by the load tasks of one test.
final class ManagedStop: Sendable {
    private let box = NIOLockedValueBox(false)
    var isSet: Bool { self.box.withLockedValue { $0 } }
    func set() { self.box.withLockedValue { $0 = true } }
}

@Suite(.serialized) struct RollingRestartTests {
    /// Restart every backend in turn while clients keep sending: retries and the hold queue mean no request
    /// fails, which is the rolling deploy the README walks through.
    @Test func aRollingRestartLosesNoRequest() async throws {
        let ports = [try freeLoopbackPort(), try freeLoopbackPort()]
        var backends = [
            try await TestBackend.start(name: "a", port: ports[0]),
            try await TestBackend.start(name: "b", port: ports[1]),
        ]
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            admin: { address: "ADMIN" }
            routes: [{ pool: web }]
            pools:
              web:
                retries: 1
                health: { path: /healthz, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }
                hold: { timeout: 10s, max_queued: 1000 }
                backends: [{ address: "127.0.0.1:\(ports[0])", id: a }, { address: "127.0.0.1:\(ports[1])", id: b }]
            """
        try await withRuntime(yaml) { portico in
            let stop = ManagedStop()
            let load = Task {
                var failures = 0
                var total = 0
                while !stop.isSet {
                    if (try? await HTTPTestClient.request(port: portico.port, .GET, "/deploy"))?.status != 200 {
                        failures += 1
                    }
                    total += 1
                }
                return (total, failures)
            }
            for index in 0..<2 {
                // The deploy drains the backend, stops it, starts the new version, and enables it again.
                _ = try await portico.admin("POST", "/pools/web/backends/\(index == 0 ? "a" : "b")/drain")
                try await Task.sleep(for: .milliseconds(100))
                await backends[index].stop()
                try await Task.sleep(for: .milliseconds(200))
                backends[index] = try await TestBackend.start(name: index == 0 ? "a2" : "b2", port: ports[index])
                _ = try await portico.admin("POST", "/pools/web/backends/\(index == 0 ? "a" : "b")/enable")
                try await Task.sleep(for: .milliseconds(200))
            }
            // And a restart with no drain at all: the health check and retries cover it.
            await backends[0].stop()
            try await Task.sleep(for: .milliseconds(300))
            backends[0] = try await TestBackend.start(name: "a3", port: ports[0])
            try await Task.sleep(for: .milliseconds(300))
            stop.set()
            let (total, failures) = await load.value
            #expect(failures == 0)
            #expect(total > 20)
        }
        for backend in backends { await backend.stop() }
    }
}
