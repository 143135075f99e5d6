/// Hashes that are the same in every process and on every run (Swift's `Hasher` is seeded per process).
///
/// Several Portico instances must pin a key to the same backend, so sticky policies use only these.
public enum StableHash {
    /// 64-bit FNV-1a of `bytes`, finalised with ``mix64(_:)`` for a good spread of similar strings.
    ///
    /// - Parameters:
    ///   - bytes: the key's bytes, such as a cookie value's UTF-8.
    @inlinable
    public static func hash<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return mix64(hash)
    }

    /// ``hash(_:)`` of a string's UTF-8.
    @inlinable
    public static func hash(_ text: String) -> UInt64 {
        self.hash(text.utf8)
    }
}
