import PorticoRESP

extension RedisURL {
    /// `text`, a Redis URL as the user wrote it (parseable or not), with its password replaced by `***`: the
    /// form to log or print. `redis://user:secret@host:6379` gives `redis://user:***@host:6379`,
    /// `redis://:secret@host` gives `redis://:***@host`, and `redis://secret@host` (a password alone, as
    /// ``RedisURL`` reads it) gives `redis://***@host`. The last `@` ends the credentials, so a password that
    /// holds `@` or `/` is hidden whole; text after the host that holds an `@` is hidden too (safe side).
    ///
    /// - Parameters:
    ///   - text: the URL, for example the value of `--redis`.
    public static func redactingPassword(in text: String) -> String {
        let scheme = text.firstRange(of: "://")?.upperBound ?? text.startIndex
        guard let at = text[scheme...].lastIndex(of: "@") else { return text }
        let credentials = text[scheme..<at]
        let user = credentials.firstIndex(of: ":").map { credentials[..<$0] + ":" } ?? ""
        return text[..<scheme] + user + "***" + text[at...]
    }
}
