// HTTP/1.1 plumbing shared by the request fuzz targets: NIO's decoders and encoder on EmbeddedChannels.
// Only NIO here; what is Portico's (inspection, the upstream head) stays in the targets.

import NIOCore
import NIOEmbedded
import NIOHTTP1

/// Records the parts a decoder passes up, and the first error, instead of letting EmbeddedChannel rethrow it.
final class PartCollector<Part>: ChannelInboundHandler {
    typealias InboundIn = Part
    var parts: [Part] = []
    var error: (any Error)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.parts.append(Self.unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.error == nil { self.error = error }
    }
}

/// One request as a decoder delivered it.
struct DecodedRequest {
    var head: HTTPRequestHead
    var body: [ByteBuffer] = []
    var bodyBytes: Int { self.body.reduce(0) { $0 + $1.readableBytes } }
    /// `.end` arrived.
    var isComplete = false
}

enum HTTPWire {
    /// Feeds `bytes`, cut at `splits`, to the downstream pipeline portico's listener builds (ProxyServer.swift:
    /// `configureHTTPServerPipeline` with an upgrade configuration without upgraders, no error handling, no
    /// outbound header validation). Feeding stops at the first error, as the connection would close.
    static func decodeDownstream(
        _ bytes: UnsafeRawBufferPointer,
        splits: [Range<Int>]
    ) -> (requests: [DecodedRequest], error: (any Error)?) {
        let channel = EmbeddedChannel()
        let collector = PartCollector<HTTPServerRequestPart>()
        do {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false,
                withServerUpgrade: (upgraders: [], completionHandler: { _ in }),
                withErrorHandling: false,
                withOutboundHeaderValidation: false
            )
            try channel.pipeline.syncOperations.addHandler(collector)
        } catch {
            finding("cannot build the downstream pipeline: \(error)")
        }
        for range in splits {
            var buffer = channel.allocator.buffer(capacity: range.count)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[range]))
            do {
                try channel.writeInbound(buffer)
            } catch {
                if collector.error == nil { collector.error = error }
            }
            if collector.error != nil { break }
        }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        return (self.assemble(collector.parts), collector.error)
    }

    /// Requests from a sequence of server request parts, in order; a part out of place is a finding (NIO's
    /// decoder promises head, body…, end).
    static func assemble(_ parts: [HTTPServerRequestPart]) -> [DecodedRequest] {
        var requests: [DecodedRequest] = []
        for part in parts {
            switch part {
            case .head(let head):
                if let last = requests.last, !last.isComplete {
                    finding("a request head before the previous request's end")
                }
                requests.append(DecodedRequest(head: head))
            case .body(let buffer):
                guard let last = requests.indices.last, !requests[last].isComplete else {
                    finding("a body part outside a request")
                }
                requests[last].body.append(buffer)
            case .end:
                guard let last = requests.indices.last, !requests[last].isComplete else {
                    finding("an end outside a request")
                }
                requests[last].isComplete = true
            }
        }
        return requests
    }

    /// The upstream request's bytes: `head` and `body` through NIO's `HTTPRequestEncoder` with
    /// `automaticallySetFramingHeaders = false` (the head carries its own framing headers).
    static func encodeUpstream(head: HTTPRequestHead, body: [ByteBuffer]) -> ByteBuffer {
        var configuration = HTTPRequestEncoder.Configuration()
        configuration.automaticallySetFramingHeaders = false
        let channel = EmbeddedChannel(handler: HTTPRequestEncoder(configuration: configuration))
        var wire = channel.allocator.buffer(capacity: 512)
        do {
            try channel.writeOutbound(HTTPClientRequestPart.head(head))
            for part in body { try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(part))) }
            try channel.writeOutbound(HTTPClientRequestPart.end(nil))
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(var buffer) = data else { finding("the encoder wrote a file region") }
                wire.writeBuffer(&buffer)
            }
            _ = try channel.finish(acceptAlreadyClosed: true)
        } catch {
            finding("HTTPRequestEncoder failed: \(error)")
        }
        return wire
    }

    /// How a strict upstream parser reads `wire`: `ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy:
    /// .fireError))`. `atEOF` ends the input with EOF (an incomplete request is an error); otherwise the decoder is
    /// removed from the pipeline, so bytes it held back after an upgrade or CONNECT head are an error.
    static func decodeUpstream(_ wire: ByteBuffer, atEOF: Bool) -> (parts: [HTTPServerRequestPart], error: (any Error)?)
    {
        let channel = EmbeddedChannel()
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .fireError))
        let collector = PartCollector<HTTPServerRequestPart>()
        do {
            try channel.pipeline.syncOperations.addHandler(decoder)
            try channel.pipeline.syncOperations.addHandler(collector)
        } catch {
            finding("cannot build the upstream pipeline: \(error)")
        }
        do {
            try channel.writeInbound(wire)
        } catch {
            if collector.error == nil { collector.error = error }
        }
        if atEOF {
            _ = try? channel.finish(acceptAlreadyClosed: true)
        } else {
            channel.pipeline.syncOperations.removeHandler(decoder).whenFailure { error in
                finding("cannot remove the upstream decoder: \(error)")
            }
            channel.embeddedEventLoop.run()
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }
        return (collector.parts, collector.error)
    }
}
