/// Fired into every downstream pipeline when Portico shuts down: an idle HTTP connection closes, a busy one
/// closes after its response, a WebSocket tunnel gets Close 1001.
struct ProxyShutdownEvent: Sendable {}
