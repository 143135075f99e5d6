// Shared by every fuzz target (compiled into each fuzzer binary next to its Fuzz/Targets/<name>.swift).

#if canImport(Glibc)
import Glibc
#endif

/// Deterministic choices drawn from the input itself (FNV-1a of its bytes seeds SplitMix64), so that seeds
/// stay plain files (a raw request, a YAML file) and a saved crash reproduces exactly.
struct FuzzChoices {
    private var state: UInt64

    init(_ bytes: UnsafeRawBufferPointer, salt: UInt64 = 0) {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ salt
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        self.state = hash
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ bound: Int) -> Int { Int(self.next() % UInt64(max(bound, 1))) }

    mutating func bool() -> Bool { self.next() & 1 == 1 }

    /// Cuts `count` bytes into pieces: often single bytes and small pieces, sometimes all at once, so that
    /// every parser sees its state carried across reads.
    mutating func splits(of count: Int) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var offset = 0
        let style = self.below(4)
        while offset < count {
            let length: Int
            switch style {
            case 0: length = count - offset
            case 1: length = 1
            case 2: length = 1 + self.below(8)
            default: length = 1 + self.below(max(count / 3, 1))
            }
            let end = min(count, offset + length)
            ranges.append(offset..<end)
            offset = end
        }
        return ranges
    }
}

/// Reports a broken invariant and stops: libFuzzer records the input as a crash. The message goes to stderr
/// first, so that the log says which invariant broke and why.
func finding(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    var text = "FINDING (\(file):\(line)): \(message())\n"
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    abort()
}

/// `bytes` as a readable string for messages: printable ASCII as is, the rest escaped.
func escaped<S: Sequence>(_ bytes: S, limit: Int = 400) -> String where S.Element == UInt8 {
    var text = ""
    var count = 0
    for byte in bytes {
        count += 1
        if count > limit {
            text += "…"
            break
        }
        switch byte {
        case 0x0D: text += "\\r"
        case 0x0A: text += "\\n"
        case 0x09: text += "\\t"
        case 0x5C: text += "\\\\"
        case 0x20..<0x7F: text.unicodeScalars.append(UnicodeScalar(byte))
        default: text += "\\x" + String(byte, radix: 16).leftPadded(to: 2)
        }
    }
    return text
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
