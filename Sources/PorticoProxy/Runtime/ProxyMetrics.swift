import CoreMetrics
import NIOCore
import PorticoConfig

/// Portico's metrics, through swift-metrics (exported as Prometheus text by the admin API when the process
/// bootstraps `PrometheusMetricsFactory`). Metric objects are made once and kept: never per message.
enum ProxyMetrics {
    static func reload(succeeded: Bool) {
        Counter(label: "portico_reloads_total", dimensions: [("result", succeeded ? "ok" : "refused")]).increment()
    }

    static func healthTransition(pool: String, backend: String, to state: String) {
        Counter(
            label: "portico_health_transitions_total",
            dimensions: [("pool", pool), ("backend", backend), ("to", state)]
        ).increment()
    }

    static func handshakeFailure(pool: String, reason: String) {
        Counter(label: "portico_websocket_handshake_failures_total", dimensions: [("pool", pool), ("reason", reason)])
            .increment()
    }

    static func held(pool: String, outcome: String) {
        Counter(label: "portico_held_requests_total", dimensions: [("pool", pool), ("outcome", outcome)]).increment()
    }

    static func ejection(pool: String, backend: String) {
        Counter(label: "portico_ejections_total", dimensions: [("pool", pool), ("backend", backend)]).increment()
    }
}

/// Per event loop caches of the per-request and per-tunnel metric objects, so the request path does one
/// dictionary lookup on its own loop instead of a registry lookup under a lock.
final class LoopMetrics {
    private struct RequestKey: Hashable {
        let route: Int
        let pool: String
        let status: UInt
    }

    private struct TunnelKey: Hashable {
        let pool: String
        let backend: String
    }

    private var requests: [RequestKey: Counter] = [:]
    private var durations: [String: Timer] = [:]
    private var tunnels: [TunnelKey: TunnelMetrics] = [:]

    /// The metric objects of tunnels to `backend`, made once per event loop and shared by every tunnel there
    /// (not four counters per tunnel: that cost a factory lookup per handshake and memory per idle socket).
    func tunnel(pool: String, backend: String) -> TunnelMetrics {
        let key = TunnelKey(pool: pool, backend: backend)
        if let known = self.tunnels[key] { return known }
        let metrics = TunnelMetrics(pool: pool, backend: backend)
        self.tunnels[key] = metrics
        return metrics
    }

    func request(route: Int, pool: String, status: UInt, duration: TimeAmount) {
        let key = RequestKey(route: route, pool: pool, status: status)
        let counter: Counter
        if let known = self.requests[key] {
            counter = known
        } else {
            counter = Counter(
                label: "portico_requests_total",
                dimensions: [("route", "\(route)"), ("pool", pool), ("status", "\(status)")]
            )
            self.requests[key] = counter
        }
        counter.increment()
        let timer: Timer
        if let known = self.durations[pool] {
            timer = known
        } else {
            timer = Timer(label: "portico_request_duration_seconds", dimensions: [("pool", pool)])
            self.durations[pool] = timer
        }
        timer.recordNanoseconds(duration.nanoseconds)
    }
}

/// The metric objects of tunnels to one backend. Message and byte counts are not here: tunnels count them in
/// ``TunnelCounters`` and `/metrics` exports them when scraped (``exportTunnelTraffic(of:)``).
final class TunnelMetrics {
    let pool: String
    let backend: String

    init(pool: String, backend: String) {
        self.pool = pool
        self.backend = backend
    }

    func closed(code: UInt16?, lifetime: TimeAmount) {
        Counter(
            label: "portico_websocket_closes_total",
            dimensions: [("pool", self.pool), ("code", Self.label(closeCode: code))]
        ).increment()
        Timer(label: "portico_tunnel_lifetime_seconds", dimensions: [("pool", self.pool)])
            .recordNanoseconds(lifetime.nanoseconds)
    }

    /// A close code as a metric label: the name of a code RFC 6455 §7.4.1 (or IANA) defines, `other` for any other
    /// value a peer chose, `none` without one. A peer picks its close code, so the code itself would be an
    /// unbounded label.
    static func label(closeCode code: UInt16?) -> String {
        guard let code else { return "none" }
        switch code {
        case 1000: return "normal"
        case 1001: return "going_away"
        case 1002: return "protocol_error"
        case 1003: return "unsupported_data"
        case 1005: return "no_status"
        case 1006: return "abnormal"
        case 1007: return "invalid_payload"
        case 1008: return "policy_violation"
        case 1009: return "too_big"
        case 1010: return "mandatory_extension"
        case 1011: return "internal_error"
        case 1012: return "service_restart"
        case 1013: return "try_again_later"
        case 1014: return "bad_gateway"
        case 1015: return "tls_handshake"
        default: return "other"
        }
    }
}

/// Adds what `state`'s tunnels carried since the previous scrape to the Prometheus counters
/// `portico_websocket_messages_total` and `portico_websocket_bytes_total`.
func exportTunnelTraffic(of state: BackendState) {
    let growth = state.tunnels.takeGrowth()
    let base = [("pool", state.pool), ("backend", state.id)]
    for (label, from, value) in [
        ("portico_websocket_messages_total", "client", growth.clientMessages),
        ("portico_websocket_messages_total", "backend", growth.backendMessages),
        ("portico_websocket_bytes_total", "client", growth.clientBytes),
        ("portico_websocket_bytes_total", "backend", growth.backendBytes),
    ] {
        Counter(label: label, dimensions: base + [("from", from)]).increment(by: Int64(value))
    }
}
