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
    ],
    targets: [
        .target(name: "TallyCore", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "TallyStore", dependencies: ["TallyCore"]),
        .target(
            name: "TallySQLite",
            dependencies: [
                "TallyStore", .product(name: "GRDB", package: "GRDB.swift"),
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
        .executableTarget(
            name: "tally",
            dependencies: ["TallyEngine", "TallySQLite", "TallyPostgres", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(
            name: "TallyCoreTests",
            dependencies: ["TallyCore", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "TallyStoreTests", dependencies: ["TallyStore", "TallyEngine", "TallySQLite", "TallyPostgres"]),
        .testTarget(
            name: "TallyEngineTests",
            dependencies: ["TallyEngine", .product(name: "PropertyBased", package: "swift-property-based")],
            exclude: ["Scenarios"]
        ),
    ]
)
