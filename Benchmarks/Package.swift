// swift-tools-version: 6.1
// Micro benchmarks (ordo-one/benchmark), kept out of the main package so its build never fetches them:
//   cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
import PackageDescription

let package = Package(
    name: "PorticoBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "portico", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "PorticoBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PorticoBalancing", package: "portico"),
                .product(name: "PorticoRouting", package: "portico"),
                .product(name: "PorticoRelay", package: "portico"),
                .product(name: "PorticoProxy", package: "portico"),
                .product(name: "PorticoConfig", package: "portico"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "PorticoBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
