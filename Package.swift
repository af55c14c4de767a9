// swift-tools-version:6.1
import PackageDescription

// Each C library is reached through exactly one system-library target and
// imported by exactly one Swift module:
//   CSodium -> Sodium      (Ed25519 signatures, random bytes, secret wiping)
//   CFuse   -> FuseKit     (the libfuse3 low-level API)
//   CSystemd -> SystemdNotify (sd_notify: readiness and watchdog under systemd)
// UpgradeCore is pure: no I/O, no C library; everything else builds on it.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "upgradefs",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "upgradefs", targets: ["upgradefs"]),
        .executable(name: "upgradefs-load", targets: ["UpgradeLoad"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        .target(
            name: "UpgradeCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "UpgradeFiles", swiftSettings: swiftSettings),
        .target(name: "Sodium", dependencies: ["CSodium", "UpgradeCore"], swiftSettings: swiftSettings),
        .target(name: "SystemdNotify", dependencies: ["CSystemd"], swiftSettings: swiftSettings),
        .target(
            name: "FuseKit",
            dependencies: ["CFuse", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UpgradeServer",
            dependencies: [
                "UpgradeCore", "Sodium", "UpgradeFiles",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: swiftSettings
        ),
        // The whiteboard's storage on PostgreSQL (`serve --udb postgres://…`): a target of its own, so the server's
        // SQLite path and its tests do not build PostgresNIO's protocol stack.
        .target(
            name: "UpgradeServerPostgres",
            dependencies: [
                "UpgradeCore", "UpgradeServer",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // Only for the pool's error type (ConnectionPoolError), which PostgresClient passes through.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The node's whiteboard client and keys, without FUSE: the mount and the load tool both use it.
        .target(
            name: "UpgradeWhiteboardClient",
            dependencies: [
                "UpgradeCore", "Sodium", "UpgradeFiles",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UpgradeNode",
            dependencies: [
                "UpgradeCore", "Sodium", "FuseKit", "UpgradeFiles", "UpgradeWhiteboardClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UpgradeManager",
            dependencies: [
                "UpgradeCore", "UpgradeFiles",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The upgrade layer: the pure routing decisions (LayerRouter) and the HTTP proxy that carries them out.
        .target(
            name: "UpgradeLayer",
            dependencies: [
                "UpgradeCore", "UpgradeFiles", "UpgradeManager",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "upgradefs",
            dependencies: [
                "UpgradeCore", "Sodium", "UpgradeServer", "UpgradeServerPostgres", "UpgradeNode", "UpgradeWhiteboardClient",
                "UpgradeManager", "UpgradeLayer", "SystemdNotify", "UpgradeFiles",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        // The whiteboard load tool (bench/run.sh): simulated nodes against a real `upgradefs serve`.
        .executableTarget(
            name: "UpgradeLoad",
            dependencies: [
                "UpgradeCore", "Sodium", "UpgradeFiles", "UpgradeWhiteboardClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "bench/UpgradeLoad",
            swiftSettings: swiftSettings
        ),

        // Helpers shared by the test targets (temporary directories, the binary, processes, mount traits); in no product.
        .target(name: "TestSupport", dependencies: ["UpgradeServer"], path: "Tests/TestSupport"),
        .testTarget(name: "UpgradeCoreTests", dependencies: ["UpgradeCore", "Sodium"]),
        .testTarget(name: "SodiumTests", dependencies: ["Sodium"]),
        .testTarget(name: "UpgradeFilesTests", dependencies: ["UpgradeFiles"]),
        .testTarget(name: "FuseKitTests", dependencies: ["FuseKit"]),
        .testTarget(
            name: "UpgradeServerTests",
            dependencies: [
                "UpgradeCore", "Sodium", "UpgradeServer", "UpgradeServerPostgres",
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
            ]
        ),
        .testTarget(name: "UpgradeNodeTests", dependencies: ["UpgradeCore", "Sodium", "UpgradeNode"]),
        .testTarget(
            name: "UpgradeWhiteboardClientTests",
            dependencies: ["UpgradeCore", "Sodium", "UpgradeWhiteboardClient"]
        ),
        .testTarget(name: "UpgradeManagerTests", dependencies: ["UpgradeCore", "UpgradeFiles", "UpgradeManager"]),
        .testTarget(name: "UpgradeLayerTests", dependencies: ["UpgradeCore", "UpgradeManager", "UpgradeLayer"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["UpgradeCore", "Sodium", "UpgradeServer", "UpgradeNode", "UpgradeWhiteboardClient", "UpgradeManager"]
        ),
    ]
)

// Every test target may use the shared test helpers.
for target in package.targets where target.type == .test {
    target.dependencies.append("TestSupport")
}
