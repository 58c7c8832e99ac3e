// swift-tools-version: 6.1
import PackageDescription

// Dependencies point one way: Core <- Store <- Engine <- CLI (and, later, the server).
// TallyCore depends on nothing but Yams (a pure YAML parser, used to read the catalog file),
// so its tests build and run without the server's packages.
let package = Package(
    name: "Tally",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tally", targets: ["tally"]),
        .library(name: "TallyCore", targets: ["TallyCore"]),
        .library(name: "TallyEngine", targets: ["TallyEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "TallyCore", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "TallyStore", dependencies: ["TallyCore"]),
        // A C shim for the one SQLite setting Swift cannot reach (`sqlite3_config` is variadic).
        .target(name: "CSQLiteSettings", linkerSettings: [.linkedLibrary("sqlite3")]),
        .target(
            name: "TallySQLite",
            dependencies: [
                "TallyStore", "CSQLiteSettings", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "TallyEngine",
            dependencies: [
                "TallyCore", "TallyStore", .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "TallyPostgres",
            dependencies: [
                "TallyStore", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Envoy's rate limit service API: Swift generated once from Protos/ by scripts/generate-protos
        // and committed, so that no protoc plugin runs in a build.
        .target(
            name: "EnvoyRateLimitAPI",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .target(
            name: "TallyServer",
            dependencies: [
                "TallyEngine", "TallyStore", "EnvoyRateLimitAPI",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            resources: [.copy("Resources")]
        ),
        .executableTarget(
            name: "tally",
            dependencies: [
                "TallyEngine", "TallyServer", "TallySQLite", "TallyPostgres", "EnvoyRateLimitAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]
        ),
        .testTarget(
            name: "TallyCoreTests",
            dependencies: ["TallyCore", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "TallyStoreTests",
            dependencies: [
                "TallyStore", "TallyEngine", "TallySQLite", "TallyPostgres", .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "TallyServerTests",
            dependencies: [
                "TallyServer", "TallySQLite", "TallyPostgres", "EnvoyRateLimitAPI",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "TallyEngineTests",
            dependencies: ["TallyEngine", .product(name: "PropertyBased", package: "swift-property-based")],
            exclude: ["Scenarios"]
        ),
    ]
)
