import NIOHTTP1
import PorticoBalancing
import Testing

@testable import PorticoProxy

/// Header filtering on the way through, as pure functions.
@Suite struct HopByHopTests {
    @Test func headersWithNothingHopByHopComeBackUnchanged() {
        let headers = HTTPHeaders([("Host", "a"), ("Accept", "*/*"), ("Content-Length", "3")])
        #expect(removingHopByHop(headers) == headers)
    }

    @Test func everyOccurrenceGoesInAnyCase() {
        let headers = HTTPHeaders([
            ("Host", "a"), ("CONNECTION", "Keep-Alive, X-Private"), ("keep-alive", "timeout=5"),
            ("x-private", "1"), ("Accept", "*/*"), ("X-PRIVATE", "2"), ("Te", "trailers"), ("Expect", "100-continue"),
        ])
        let kept = removingHopByHop(headers, alsoRemoving: ["expect"])
        #expect(kept.map(\.name) == ["Host", "Accept"])
    }

    @Test func lowercaseComparisonOnlyFoldsASCIILetters() {
        #expect("Transfer-Encoding".equalsLowercase("transfer-encoding"))
        #expect(!"transfer_encoding".equalsLowercase("transfer-encoding"))
        #expect(!"Upgrade ".equalsLowercase("upgrade"))
        #expect(!"\u{7B}".equalsLowercase("\u{5B}"))
    }

    @Test func backendAddressesBracketIPv6() {
        #expect(Backend(id: "a", host: "10.0.0.1", port: 80, index: 0).address == "10.0.0.1:80")
        #expect(Backend(id: "b", host: "::1", port: 8080, index: 1).address == "[::1]:8080")
        #expect(Backend(id: "c", host: "chat.internal", port: 9000, index: 2).address == "chat.internal:9000")
    }
}
