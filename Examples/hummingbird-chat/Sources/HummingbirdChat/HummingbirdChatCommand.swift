import Foundation
import Hummingbird
import Logging
import PorticoRESP
import PorticoRelay

/// `hummingbird-chat`: a chat node on Hummingbird 2 that shares rooms with `portico-chat` nodes through Redis.
///
///     hummingbird-chat --listen 127.0.0.1:9101 --node-id hb-1 --redis redis://127.0.0.1:6379
///
/// The flags are portico-chat's (the ones this example has): run it next to portico-chat nodes on the same Redis
/// and their clients share rooms. SIGTERM or SIGINT stops it gracefully.
@main
struct HummingbirdChatCommand {
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.contains("--help") || arguments.contains("-h") {
            print(Options.usage)
            return
        }
        let options: Options
        do {
            options = try Options(arguments)
        } catch {
            FileHandle.standardError.write(Data("hummingbird-chat: \(error)\n\n\(Options.usage)\n".utf8))
            exit(64)  // EX_USAGE
        }
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "hummingbird-chat")
        logger[metadataKey: "portico.node"] = "\(options.node)"

        let broker = RedisBroker(configuration: RedisBroker.Configuration(url: options.redis, node: options.node))
        let relay = Relay(node: options.node, broker: broker, logger: logger)
        let node = ChatNode(node: options.node, relay: relay, broker: broker, logger: logger)
        let application = node.makeApplication(host: options.host, port: options.port)
        logger.info("chat node starting", metadata: ["portico.listen": "\(options.host):\(options.port)"])
        do {
            // A service group of its own with SIGTERM and SIGINT as graceful signals: the server stops accepting
            // and closes its WebSockets, then the broker leaves Redis (its presence goes at once, not after a TTL).
            try await application.runService()
        } catch {
            logger.error("chat node failed", metadata: ["portico.error": "\(error)"])
            exit(1)
        }
    }
}

/// The command line, parsed by hand to keep the example's dependencies few.
struct Options {
    var host = "127.0.0.1"
    var port = 9101
    var node = ProcessInfo.processInfo.hostName
    var redis = RedisURL("redis://127.0.0.1:6379")!

    static let usage = """
        usage: hummingbird-chat [--listen HOST:PORT] [--node-id ID] [--redis redis://HOST:PORT]
          --listen    address to listen on (default 127.0.0.1:9101)
          --node-id   this node's id, unique among the nodes on the Redis (default: the host name)
          --redis     the Redis that portico-chat nodes use too (default redis://127.0.0.1:6379)
        """

    struct UsageError: Error, CustomStringConvertible {
        let description: String
    }

    /// Reads `--flag value` and `--flag=value`.
    init(_ arguments: [String]) throws {
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            var flag = argument
            var inline: String?
            if let equals = argument.firstIndex(of: "=") {
                flag = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            }
            guard let value = inline ?? rest.popFirst() else { throw UsageError(description: "\(flag) needs a value") }
            switch flag {
            case "--listen":
                guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
                    (0...65_535).contains(port)
                else { throw UsageError(description: "--listen: expected host:port") }
                self.host = String(value[..<colon])
                self.port = port
            case "--node-id":
                // It travels in every envelope (a u16 length) and in every member id: keep it short.
                guard !value.isEmpty, value.utf8.count <= 255 else {
                    throw UsageError(description: "--node-id: expected 1-255 bytes")
                }
                self.node = value
            case "--redis":
                guard let url = RedisURL(value) else {
                    throw UsageError(description: "--redis: expected redis://host:port")
                }
                self.redis = url
            default:
                throw UsageError(description: "unknown option \(flag)")
            }
        }
    }
}
