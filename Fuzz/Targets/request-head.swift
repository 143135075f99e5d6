// Fuzz target `request-head`: raw downstream bytes → NIO's request decoder as portico's listener configures it →
// RequestInspection.inspect → upstreamHead. Never crashes, and the upstream head of an accepted request is one
// a backend reads the same way: HTTP/1.1, one Host, valid header names and values, no hop-by-hop header but the
// WebSocket pair, and its framing header written exactly once and matching the inspected framing.

import NIOCore
import NIOHTTP1
import PorticoConfig
import PorticoRouting

@testable import PorticoProxy

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var choices = FuzzChoices(bytes)
    RequestHeadTarget.run(bytes, choices: &choices)
    return 0
}

enum RequestHeadTarget {
    static func run(_ bytes: UnsafeRawBufferPointer, choices: inout FuzzChoices) {
        let route = FuzzRoutes.pick(&choices)
        var limits = LimitsConfiguration()
        if choices.below(4) == 0 {
            limits.maxHeaderBytes = 1024
            limits.maxURIBytes = 64
        }
        let (requests, _) = HTTPWire.decodeDownstream(bytes, splits: choices.splits(of: bytes.count))
        for request in requests {
            let framing: RequestFraming
            switch RequestInspection.inspect(request.head, limits: limits) {
            case .failure:
                // Portico answers and closes: nothing after a rejected head is read, nothing goes upstream.
                return
            case .success(let value):
                framing = value
            }
            let upstream = request.head.upstreamHead(
                route: route,
                backendAddress: "10.0.0.1:8080",
                framing: framing,
                forwarding: ForwardingContext(downstreamIP: "192.0.2.1", requestID: "fuzz-request", scheme: "http")
            )
            Self.check(upstream, of: request, framing: framing)
            if request.head.stopsTheParser { return }
        }
    }

    static func check(_ upstream: HTTPRequestHead, of request: DecodedRequest, framing: RequestFraming) {
        let head = request.head
        let context = "\(head.method) \(escaped(head.uri.utf8)) → \(upstream)"
        if upstream.version != .http1_1 { finding("upstream version \(upstream.version): \(context)") }
        if upstream.method != head.method { finding("method changed: \(context)") }
        if upstream.uri.isEmpty || upstream.uri.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
            finding("upstream target empty or with a space or control byte: \(context)")
        }
        for (name, value) in upstream.headers {
            if !RequestInspection.isValidName(name) || !RequestInspection.isValidValue(value) {
                finding("invalid upstream header \(escaped(name.utf8)): \(escaped(value.utf8)) in \(context)")
            }
        }
        if upstream.headers["host"].count != 1 {
            finding("upstream has \(upstream.headers["host"].count) Host: \(context)")
        }

        // Hop-by-hop headers end at the proxy; the WebSocket handshake is the one exchange passed on.
        for name in ["keep-alive", "proxy-connection", "te", "trailer", "proxy-authenticate", "proxy-authorization"]
        where upstream.headers.contains(name: name) {
            finding("hop-by-hop \(name) forwarded: \(context)")
        }
        let connection = upstream.headers["connection"]
        let upgrade = upstream.headers["upgrade"]
        if head.isWebSocketUpgrade {
            if connection != ["upgrade"] || upgrade != ["websocket"] {
                finding("WebSocket handshake forwarded as connection \(connection), upgrade \(upgrade): \(context)")
            }
        } else if !connection.isEmpty || !upgrade.isEmpty {
            finding("Connection/Upgrade forwarded on a request that is no WebSocket handshake: \(context)")
        }

        // Framing: written exactly once, and saying what the inspection decided.
        let transferEncoding = upstream.headers["transfer-encoding"]
        let contentLength = upstream.headers["content-length"]
        switch framing {
        case .chunked:
            if transferEncoding.count != 1 || transferEncoding.first?.lowercased() != "chunked"
                || !contentLength.isEmpty
            {
                finding("chunked framing forwarded as TE \(transferEncoding), CL \(contentLength): \(context)")
            }
        case .contentLength(let length):
            if !transferEncoding.isEmpty || contentLength.count != 1 || Int(contentLength[0]) != length {
                finding("Content-Length \(length) forwarded as TE \(transferEncoding), CL \(contentLength): \(context)")
            }
            if request.isComplete && request.bodyBytes != length {
                finding("Content-Length \(length) but \(request.bodyBytes) body bytes decoded: \(context)")
            }
        case .none:
            if !transferEncoding.isEmpty || contentLength.count > 1 || contentLength.contains(where: { Int($0) != 0 }) {
                finding("no body, forwarded as TE \(transferEncoding), CL \(contentLength): \(context)")
            }
            if request.bodyBytes != 0 && !head.stopsTheParser {
                finding("framing none but \(request.bodyBytes) body bytes decoded: \(context)")
            }
        }
    }
}
