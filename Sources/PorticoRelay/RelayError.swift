/// Errors the relay throws. A struct with a private code and public static values (as async-http-client
/// does), so new errors do not break callers that switch on the ones they know.
public struct RelayError: Error, Hashable, CustomStringConvertible {
    private enum Code: Hashable {
        case envelopeFieldTooLong
    }

    private let code: Code
    /// What exactly was wrong, for logs and `error` replies; not part of equality.
    private let detail: String

    private init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    /// A room name, node id or member id longer than an envelope can carry (``Envelope/maxFieldLength`` UTF-8
    /// bytes), more `except` members than ``Envelope/maxExceptCount``, or a payload over
    /// ``Envelope/maxPayloadLength`` bytes.
    public static let envelopeFieldTooLong = RelayError(code: .envelopeFieldTooLong, detail: "")

    static func envelopeFieldTooLong(_ detail: String) -> RelayError {
        RelayError(code: .envelopeFieldTooLong, detail: detail)
    }

    public static func == (lhs: RelayError, rhs: RelayError) -> Bool { lhs.code == rhs.code }

    public func hash(into hasher: inout Hasher) { hasher.combine(self.code) }

    public var description: String {
        switch self.code {
        case .envelopeFieldTooLong:
            self.detail.isEmpty ? "envelope field too long" : "envelope field too long: \(self.detail)"
        }
    }
}
