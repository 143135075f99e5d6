import NIOCore

/// Encodes commands as RESP arrays of bulk strings, straight into a `ByteBuffer`.
public enum RESPEncoder {
    /// Appends one command (`["PUBLISH", channel, payload]`) to `buffer`.
    ///
    /// - Parameters:
    ///   - arguments: the command name and its arguments, as bytes.
    ///   - buffer: where to write; pipelined commands go one after another.
    public static func encode(_ arguments: [ByteBuffer], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.readableBytes)\r\n")
            buffer.writeImmutableBuffer(argument)
            buffer.writeStaticString("\r\n")
        }
    }

    /// Appends one command given as strings.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        self.encode(arguments.map { ByteBuffer(string: $0) }, into: &buffer)
    }
}
