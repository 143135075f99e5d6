// Fuzz target `differential`: any bytes portico's front accepts as a request (NIO's decoder, configured as the
// listener configures it, delivers head, body…, end without an error, and RequestInspection accepts the head)
// are sent upstream the way portico sends them: `upstreamHead(…)`, then NIO's HTTPRequestEncoder with
// `automaticallySetFramingHeaders = false`, then the body parts. A fresh strict NIO request decoder
// (`leftOverBytesStrategy: .fireError`) must read those bytes as exactly one request with the same method, the
// target portico rewrote to, the same framing and the same body bytes. A second head, leftover bytes, an error
// or any difference means the backend reads something other than what portico checked: a finding.

import NIOCore
import NIOHTTP1
import PorticoConfig
import PorticoRouting

@testable import PorticoProxy

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var choices = FuzzChoices(bytes)
    DifferentialTarget.run(bytes, choices: &choices)
    return 0
}

enum DifferentialTarget {
    static func run(_ bytes: UnsafeRawBufferPointer, choices: inout FuzzChoices) {
        let route = FuzzRoutes.pick(&choices)
        let limits = LimitsConfiguration()
        let (requests, _) = HTTPWire.decodeDownstream(bytes, splits: choices.splits(of: bytes.count))
        // Every request that ended before the first error was forwarded; portico stops at a rejected head.
        for request in requests where request.isComplete {
            guard case .success(let framing) = RequestInspection.inspect(request.head, limits: limits) else { return }
            let upstream = request.head.upstreamHead(
                route: route,
                backendAddress: "10.0.0.1:8080",
                framing: framing,
                forwarding: ForwardingContext(downstreamIP: "192.0.2.1", requestID: "fuzz-request", scheme: "http")
            )
            Self.compare(request, framing: framing, upstream: upstream)
            if request.head.stopsTheParser { return }
        }
    }

    static func compare(_ request: DecodedRequest, framing: RequestFraming, upstream: HTTPRequestHead) {
        let wire = HTTPWire.encodeUpstream(head: upstream, body: request.body)
        func fail(_ problem: String) -> Never {
            finding(
                "\(problem)\n  downstream: \(request.head)\n  framing: \(framing), body \(request.bodyBytes) bytes"
                    + "\n  upstream wire: \(escaped(wire.readableBytesView, limit: 2000))"
            )
        }
        // Once with EOF after the bytes (an unfinished request is an error), once removing the decoder
        // (bytes it held back after an upgrade are an error).
        for atEOF in [true, false] {
            let (parts, error) = HTTPWire.decodeUpstream(wire, atEOF: atEOF)
            if let error { fail("the upstream parser failed (atEOF: \(atEOF)): \(error)") }
            guard case .head(let head) = parts.first else { fail("the upstream parser read no head") }
            var body = ByteBuffer()
            var ended = false
            for part in parts.dropFirst() {
                switch part {
                case .head(let second): fail("the upstream parser read a second request: \(second)")
                case .body(var buffer):
                    if ended { fail("body after the end") }
                    body.writeBuffer(&buffer)
                case .end:
                    if ended { fail("a second end") }
                    ended = true
                }
            }
            if !ended { fail("the upstream request never ended") }
            if head.method != request.head.method { fail("method \(request.head.method) became \(head.method)") }
            if head.uri != upstream.uri {
                fail("target \(escaped(upstream.uri.utf8)) read as \(escaped(head.uri.utf8))")
            }
            var downstreamBody = ByteBuffer()
            for var part in request.body { downstreamBody.writeBuffer(&part) }
            if body != downstreamBody {
                fail(
                    "body of \(downstreamBody.readableBytes) bytes read as \(body.readableBytes): \(escaped(body.readableBytesView))"
                )
            }
            // The backend frames the body as the proxy did (inspected the same way: no Content-Length 0 vs none
            // distinction, which carries no body either way).
            switch RequestInspection.inspect(head, limits: LimitsConfiguration()) {
            case .failure(let rejection):
                fail("the upstream head is one portico itself would reject: \(rejection.reason)")
            case .success(let upstreamFraming):
                if upstreamFraming != framing { fail("framing \(framing) read upstream as \(upstreamFraming)") }
            }
        }
    }
}
