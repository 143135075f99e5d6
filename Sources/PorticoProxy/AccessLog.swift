import Logging
import NIOCore
import NIOHTTP1
import PorticoBalancing

/// One log line per request, through swift-log at `.info` under the label `portico.access`.
struct AccessLog {
    let logger: Logger

    func record(_ exchange: Exchange, status: UInt, downstreamIP: String?) {
        guard self.logger.logLevel <= .info else { return }
        let elapsed = NIODeadline.now() - exchange.started
        self.logger.info(
            "\(exchange.head.method.rawValue) \(exchange.head.uri) \(status)",
            metadata: [
                "portico.downstream": "\(downstreamIP ?? "-")",
                "portico.method": "\(exchange.head.method.rawValue)",
                "portico.path": "\(exchange.head.uri)",
                "portico.status": "\(status)",
                "portico.pool": "\(exchange.pool.name)",
                "portico.backend": "\(exchange.lastBackendID ?? "-")",
                "portico.duration_ms": "\(Double(elapsed.nanoseconds / 1000) / 1000)",
                "portico.bytes": "\(exchange.responseBytes)",
                "portico.request_id": "\(exchange.requestID)",
                "portico.attempts": "\(exchange.attempts)",
            ]
        )
    }

    func rejected(_ head: HTTPRequestHead? = nil, status: UInt, reason: String, downstreamIP: String?) {
        guard self.logger.logLevel <= .info else { return }
        self.logger.info(
            "\(head?.method.rawValue ?? "-") \(head?.uri ?? "-") \(status)",
            metadata: [
                "portico.downstream": "\(downstreamIP ?? "-")",
                "portico.method": "\(head?.method.rawValue ?? "-")",
                "portico.path": "\(head?.uri ?? "-")",
                "portico.status": "\(status)",
                "portico.pool": "-",
                "portico.backend": "-",
                "portico.reason": "\(reason)",
            ]
        )
    }

    func upstreamError(_ exchange: Exchange, backend: Backend?, error: any Error) {
        self.logger.warning(
            "upstream attempt failed",
            metadata: [
                "portico.pool": "\(exchange.pool.name)",
                "portico.backend": "\(backend?.id ?? "-")",
                "portico.request_id": "\(exchange.requestID)",
                "portico.error": "\(error)",
            ]
        )
    }
}
