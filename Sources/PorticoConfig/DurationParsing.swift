extension Duration {
    /// Parses a configuration duration: a whole number and a unit, `ms`, `s`, `m` or `h` (`250ms`, `2s`, `5m`).
    ///
    /// - Parameters:
    ///   - text: the duration as written.
    /// - Returns: `nil` for anything else, negative numbers included.
    public static func parsing(_ text: String) -> Duration? {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let value = Int64(digits) else { return nil }
        switch trimmed.dropFirst(digits.count) {
        case "ms": return .milliseconds(value)
        case "s": return .seconds(value)
        case "m": return .seconds(value * 60)
        case "h": return .seconds(value * 3600)
        default: return nil
        }
    }

    /// Whole milliseconds in this duration (rounded down).
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

extension StringProtocol {
    var trimmingSpaces: SubSequence {
        var text = self[...]
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return text
    }
}
