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
        var storages: [Unmanaged<AnyObject>] = []
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        storages.reserveCapacity(arguments.count)
        pointers.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            argument.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                storages.append(storage.retain())
                // An empty argument may have no address: point at a static empty string (zero bytes are read).
                let base = bytes.baseAddress ?? UnsafeRawPointer(("" as StaticString).utf8Start)
                pointers.append(base.assumingMemoryBound(to: CChar.self))
                lengths.append(bytes.count)
            }
        }
        defer { for storage in storages { storage.release() } }
        var formatted: UnsafeMutablePointer<CChar>?
        let length = pointers.withUnsafeMutableBufferPointer { argv in
            redisFormatCommandArgv(&formatted, Int32(arguments.count), argv.baseAddress, lengths)
        }
        guard let formatted, length > 0 else {
            preconditionFailure("redisFormatCommandArgv failed (out of memory)")
        }
        defer { redisFreeCommand(formatted) }
        buffer.writeBytes(UnsafeRawBufferPointer(start: formatted, count: Int(length)))
    }

    /// Appends one command given as strings.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        self.encode(arguments.map { ByteBuffer(string: $0) }, into: &buffer)
    }
}
