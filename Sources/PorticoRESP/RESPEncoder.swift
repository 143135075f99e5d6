import CHiredis
import NIOCore

/// Encodes commands as RESP arrays of bulk strings with hiredis' `redisFormatCommandArgv`, appended to a
/// `ByteBuffer`.
public enum RESPEncoder {
    /// Appends one command (`["PUBLISH", channel, payload]`) to `buffer`.
    ///
    /// - Parameters:
    ///   - arguments: the command name and its arguments, as bytes.
    ///   - buffer: where to write; pipelined commands go one after another.
    public static func encode(_ arguments: [ByteBuffer], into buffer: inout ByteBuffer) {
        // hiredis reads every argument in place: each buffer's storage is retained while its pointer is used.
        // argv, lengths and the retained storages live on the stack: no allocation besides hiredis' own.
        let count = arguments.count
        withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { pointers in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { lengths in
                withUnsafeTemporaryAllocation(of: Unmanaged<AnyObject>.self, capacity: count) { storages in
                    for (index, argument) in arguments.enumerated() {
                        argument.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                            storages.initializeElement(at: index, to: storage.retain())
                            // An empty argument may have no address: point at a static empty string.
                            let base = bytes.baseAddress ?? UnsafeRawPointer(("" as StaticString).utf8Start)
                            pointers.initializeElement(at: index, to: base.assumingMemoryBound(to: CChar.self))
                            lengths.initializeElement(at: index, to: bytes.count)
                        }
                    }
                    defer { for index in 0..<count { storages[index].release() } }
                    var formatted: UnsafeMutablePointer<CChar>?
                    let length = redisFormatCommandArgv(
                        &formatted,
                        Int32(count),
                        pointers.baseAddress,
                        UnsafePointer(lengths.baseAddress)
                    )
                    guard let formatted, length > 0 else {
                        preconditionFailure("redisFormatCommandArgv failed (out of memory)")
                    }
                    defer { redisFreeCommand(formatted) }
                    buffer.writeBytes(UnsafeRawBufferPointer(start: formatted, count: Int(length)))
                }
            }
        }
    }

    /// Appends one command given as strings.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        self.encode(arguments.map { ByteBuffer(string: $0) }, into: &buffer)
    }
}
