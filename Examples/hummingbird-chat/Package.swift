// swift-tools-version:6.1
// A Hummingbird 2 chat node that shares rooms with portico-chat through PorticoRelay. Its own package, so that the
// main build never fetches or compiles Hummingbird (STYLE.md A6):
//   cd Examples/hummingbird-chat && swift run hummingbird-chat --redis redis://127.0.0.1:6379
import PackageDescription

let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "hummingbird-chat",
    platforms: [.macOS(.v15)],  // PorticoRelay's floor (Synchronization); Hummingbird 2 needs macOS 14
    products: [
        .executable(name: "hummingbird-chat", targets: ["HummingbirdChat"])
    ],
    dependencies: [
        // The name is what the products below refer to: a path dependency is otherwise named after its folder.
        .package(name: "portico", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .executableTarget(
            name: "HummingbirdChat",
            dependencies: [
                .product(name: "PorticoRelay", package: "portico"),
                .product(name: "PorticoRESP", package: "portico"),  // RedisURL
                .product(name: "PorticoChatProtocol", package: "portico"),  // the message op's bytes
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "HummingbirdChatTests",
            dependencies: [
                "HummingbirdChat",
                .product(name: "PorticoRelay", package: "portico"),
                .product(name: "PorticoRESP", package: "portico"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
    ]
)
