/// One problem in a configuration, with the key path and the place in the file it came from.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Dotted key path, such as `pools.chat.backends[0].address`.
    public var path: String
    /// 1-based line in the file, when the problem came from one.
    public var line: Int?
    /// 1-based column in the file, when the problem came from one.
    public var column: Int?
    /// What is wrong, in words a user can act on.
    public var message: String

    public init(path: String, line: Int? = nil, column: Int? = nil, message: String) {
        self.path = path
        self.line = line
        self.column = column
        self.message = message
    }

    /// `line:column: path: message`, or `path: message` without a place.
    public var description: String {
        let place = self.line.map { "\($0):\(self.column ?? 1): " } ?? ""
        return self.path.isEmpty ? "\(place)\(self.message)" : "\(place)\(self.path): \(self.message)"
    }
}

/// Every problem found in one configuration; thrown by loading so that a user sees them all at once.
public struct ConfigurationErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigurationError]

    public init(_ errors: [ConfigurationError]) {
        self.errors = errors
    }

    /// One error per line.
    public var description: String {
        self.errors.map(\.description).joined(separator: "\n")
    }
}
