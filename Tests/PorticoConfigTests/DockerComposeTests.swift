import Foundation
import PorticoConfig
import Testing
import Yams

/// There is no Docker engine on our machines, so docker/ is checked for consistency instead: the compose
/// services, ports, commands and config files must agree with each other and with the binaries' CLIs.
@Suite struct DockerComposeTests {
    static let root: String = {
        var components = #filePath.split(separator: "/").map(String.init)
        components.removeLast(3)
        return "/" + components.joined(separator: "/")
    }()

    static func compose() throws -> [String: Any] {
        let text = try String(contentsOfFile: Self.root + "/docker/compose.yml", encoding: .utf8)
        return try #require(try Yams.load(yaml: text) as? [String: Any])
    }

    @Test func servicesAgreeWithEachOther() throws {
        let services = try #require(try Self.compose()["services"] as? [String: Any])
        #expect(Set(services.keys) == ["redis", "chat", "portico"])
        let chat = try #require(services["chat"] as? [String: Any])
        let portico = try #require(services["portico"] as? [String: Any])
        let chatCommand = try #require(chat["command"] as? [String])
        #expect(chatCommand.first == "portico-chat")
        let listen = try #require(chatCommand.firstIndex(of: "--listen").map { chatCommand[$0 + 1] })
        let chatPort = try #require(HostPort(parsing: listen)?.port)
        let redisURL = try #require(chatCommand.firstIndex(of: "--redis").map { chatCommand[$0 + 1] })
        #expect(redisURL == "redis://redis:6379")  // the redis service, on its default port

        // portico runs the mounted docker/portico.yml, and that file is valid.
        let volumes = try #require(portico["volumes"] as? [String])
        #expect(volumes.contains("./portico.yml:/etc/portico/portico.yml:ro"))
        let command = try #require(portico["command"] as? [String])
        #expect(command == ["portico", "run", "--config", "/etc/portico/portico.yml"])
        let configuration = try PorticoConfiguration.load(path: Self.root + "/docker/portico.yml", environment: [:])
        // DNS discovery finds the chat service's replicas on the port they listen on.
        let pool = try #require(configuration.pools.first)
        #expect(pool.discovery?.dns?.name == "chat")
        #expect(pool.discovery?.dns?.port == chatPort)
        #expect(pool.health?.path == "/healthz")
        // Published ports match the listeners.
        let ports = try #require(portico["ports"] as? [String])
        #expect(ports.contains("8080:\(configuration.listeners[0].address.port)"))
        #expect(ports.contains("127.0.0.1:9901:\(try #require(configuration.admin).address.port)"))
        // The Dockerfile builds both binaries and ships the config at the path the command uses.
        let dockerfile = try String(contentsOfFile: Self.root + "/docker/Dockerfile", encoding: .utf8)
        #expect(dockerfile.contains("--product portico-chat") && dockerfile.contains("--product portico "))
        #expect(dockerfile.contains("COPY docker/portico.yml /etc/portico/portico.yml"))
        #expect(dockerfile.contains("libhiredis"))
    }

    @Test func commandsUseFlagsTheBinariesAccept() throws {
        let chat = Self.root + "/.build/debug/portico-chat"
        guard FileManager.default.isExecutableFile(atPath: chat) else {
            Issue.record("build portico-chat first: \(chat)")
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: chat)
        process.arguments = ["--help"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let help = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let services = try #require(try Self.compose()["services"] as? [String: Any])
        let command = try #require((services["chat"] as? [String: Any])?["command"] as? [String])
        for flag in command where flag.hasPrefix("--") {
            #expect(help.contains(flag), "portico-chat does not know \(flag)")
        }
    }
}
