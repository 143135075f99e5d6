import NIOCore

/// A RESP2 reply, copied out of hiredis so that no C memory outlives the parse.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// `nil` is the RESP null bulk string.
    case bulkString(ByteBuffer?)
    /// `nil` is the RESP null array.
    case array([RESPValue]?)
}
