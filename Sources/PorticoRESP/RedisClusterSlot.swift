/// Redis Cluster's key (and shard channel) to slot mapping: CRC16-XMODEM of the key, or of its hash tag, mod 16384.
public enum RedisClusterSlot {
    public static let count = 16_384

    /// The slot of `key`. When the key holds a non-empty `{tag}`, only the tag is hashed, so keys and channels
    /// sharing a tag land on one shard.
    public static func of(_ key: String) -> Int {
        var key = key
        return key.withUTF8 { Self.of(bytes: $0) }
    }

    /// The slot of a key given as bytes.
    public static func of(bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var hashed = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = bytes[(open + 1)..<close]
        }
        var crc: UInt16 = 0
        for byte in hashed {
            crc = (crc << 8) ^ Self.table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return Int(crc) & (Self.count - 1)
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
