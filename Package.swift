// swift-tools-version:6.1
import PackageDescription

let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

func nio(_ name: String) -> Target.Dependency { .product(name: name, package: "swift-nio") }
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let yams: Target.Dependency = .product(name: "Yams", package: "Yams")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")

let package = Package(
    name: "portico",
    platforms: [.macOS(.v15)],  // Synchronization.Atomic/Mutex on Darwin; Linux is the real target
    products: [
        .executable(name: "portico", targets: ["PorticoServer"]),
        .executable(name: "portico-testbackend", targets: ["TestBackendServer"]),
        .executable(name: "portico-bench", targets: ["PorticoBench"]),
        .executable(name: "portico-chat", targets: ["ChatNode"]),
        .library(name: "PorticoRelay", targets: ["PorticoRelay"]),
        .library(name: "PorticoChatProtocol", targets: ["PorticoChatProtocol"]),
        .library(name: "PorticoBalancing", targets: ["PorticoBalancing"]),
        .library(name: "PorticoRouting", targets: ["PorticoRouting"]),
        .library(name: "PorticoRESP", targets: ["PorticoRESP"]),
        .library(name: "PorticoConfig", targets: ["PorticoConfig"]),
        .library(name: "PorticoProxy", targets: ["PorticoProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Insecure.SHA1 for Sec-WebSocket-Accept: a backend's 101 must answer the client's key.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // policy — pure Swift
        .target(name: "PorticoConfig", dependencies: [yams], swiftSettings: settings),
        .target(name: "PorticoBalancing", swiftSettings: settings),
        .target(
            name: "PorticoRouting",
            dependencies: ["PorticoConfig", "PorticoBalancing", nio("NIOHTTP1")],
            swiftSettings: settings
        ),
        // mechanism — SwiftNIO
        .target(
            name: "PorticoProxy",
            dependencies: [
                "PorticoConfig", "PorticoRouting", "PorticoBalancing", "PorticoRESP",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOConcurrencyHelpers"), logging, lifecycle,
                metrics, prometheus, .product(name: "UnixSignals", package: "swift-service-lifecycle"), nioSSL,
                nio("NIOTLS"), crypto,
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "PorticoServer",
            dependencies: [
                "PorticoProxy", "PorticoConfig", argumentParser, logging, lifecycle, metrics, prometheus,
                .product(name: "UnixSignals", package: "swift-service-lifecycle"), nio("NIOCore"), nio("NIOPosix"),
            ],
            swiftSettings: settings
        ),
        // relay
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]),
        .target(
            name: "PorticoRESP",
            dependencies: ["CHiredis", nio("NIOCore"), nio("NIOPosix"), nio("NIOConcurrencyHelpers")],
            swiftSettings: settings
        ),
        .target(
            name: "PorticoRelay",
            dependencies: [
                "PorticoRESP", nio("NIOCore"), nio("NIOPosix"), nio("NIOWebSocket"), nio("NIOConcurrencyHelpers"),
                logging, lifecycle, metrics,
            ],
            swiftSettings: settings
        ),
        // test support (not a product)
        .target(
            name: "PorticoTestSupport",
            dependencies: [
                "PorticoRESP", nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOWebSocket"), nioSSL,
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "TestBackendServer",
            dependencies: ["PorticoTestSupport", argumentParser, nio("NIOPosix")],
            swiftSettings: settings
        ),
        // The chat protocol's shared bytes, for portico-chat and other chat nodes in the same rooms.
        .target(name: "PorticoChatProtocol", dependencies: [nio("NIOCore")], swiftSettings: settings),
        .executableTarget(
            name: "ChatNode",
            dependencies: [
                "PorticoRelay", "PorticoRESP", "PorticoChatProtocol", argumentParser, logging, lifecycle, metrics,
                prometheus,
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOWebSocket"), nio("NIOConcurrencyHelpers"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "PorticoBench",
            dependencies: [
                "PorticoRelay", "PorticoRESP", argumentParser, nio("NIOCore"), nio("NIOPosix"),
                nio("NIOConcurrencyHelpers"), .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: settings
        ),
        .testTarget(name: "PorticoConfigTests", dependencies: ["PorticoConfig", yams], swiftSettings: settings),
        .testTarget(name: "PorticoBalancingTests", dependencies: ["PorticoBalancing"], swiftSettings: settings),
        .testTarget(
            name: "PorticoRoutingTests",
            dependencies: ["PorticoRouting", "PorticoConfig", "PorticoBalancing", nio("NIOHTTP1")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ChatNodeTests",
            dependencies: ["ChatNode", "PorticoChatProtocol", nio("NIOCore")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "PorticoProxyTests",
            dependencies: [
                "PorticoProxy", "PorticoConfig", "PorticoBalancing", "PorticoRESP", "PorticoTestSupport",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOEmbedded"), logging, metrics, prometheus,
                nioSSL,
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "PorticoRESPTests",
            dependencies: [
                "PorticoRESP", "PorticoTestSupport", nio("NIOCore"), nio("NIOConcurrencyHelpers"), nio("NIOEmbedded"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "PorticoRelayTests",
            dependencies: [
                "PorticoRelay", "PorticoRESP", "PorticoTestSupport", nio("NIOCore"), nio("NIOConcurrencyHelpers"),
                nio("NIOEmbedded"), nio("NIOWebSocket"),
            ],
            swiftSettings: settings
        ),
    ]
)
