/// The value of a sticky cookie: an opaque name for a backend, never its address.
///
/// Derived with ``StableHash`` from the pool name and backend id, so every portico replica issues and honours
/// the same tokens, and a token stays valid across restarts and reloads while the backend keeps its id.
public enum StickyToken {
    /// 16 hex digits naming `backendID` within `pool`.
    public static func make(pool: String, backendID: String) -> String {
        let text = String(StableHash.hash("portico-sticky\u{0}\(pool)\u{0}\(backendID)"), radix: 16)
        return String(repeating: "0", count: 16 - text.count) + text
    }
}
