import Foundation
import Logging
import PostgresNIO
import UpgradeCore
import UpgradeServer

/// Opens the whiteboard on PostgreSQL from a connection URL (`serve --udb`, `enroll --udb`, …).
public enum PostgresWhiteboard {
    /// Connections (and the threads running transactions on them) per process.
    public static let connections = 8
    /// How long a call waits for a connection (and one connection attempt lasts) before "unavailable".
    public static let connectTimeout: Duration = .seconds(5)
    /// How long one statement may go unanswered before its connection is closed and the call is "unavailable" (a
    /// write waiting for the write lock included: no transaction holds it that long).
    public static let statementDeadline: Duration = .seconds(30)

    /// A PostgreSQL connection URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE&host=SOCKETDIR]`
    /// (`postgresql://` too). `sslmode` is `disable`, `prefer` (the default, as libpq's) or `require`; `host=` in
    /// the query names a directory holding PostgreSQL's Unix socket (`.s.PGSQL.PORT`), as libpq's does.
    public struct ConnectionURL: Sendable, Equatable {
        public enum TLSMode: String, Sendable { case disable, prefer, require }
        public var user: String
        public var password: String?
        public var host: String
        public var port: Int
        public var database: String
        public var tls: TLSMode
        /// The Unix socket's directory, when connecting through one.
        public var socketDirectory: String?

        public struct Invalid: Error, CustomStringConvertible {
            public let description: String
        }

        public static func isPostgres(_ text: String) -> Bool {
            text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
        }

        public init(_ text: String) throws(Invalid) {
            guard Self.isPostgres(text), let components = URLComponents(string: text) else {
                throw Invalid(description: "not a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
            }
            guard let user = components.user, !user.isEmpty else { throw Invalid(description: "the URL names no user (postgres://USER@HOST/DATABASE)") }
            let database = String(components.path.drop { $0 == "/" })
            guard !database.isEmpty, !database.contains("/") else { throw Invalid(description: "the URL names no database (postgres://USER@HOST/DATABASE)") }
            self.user = user
            password = components.password
            host = components.host ?? ""
            port = components.port ?? 5432
            self.database = database
            tls = .prefer
            for item in components.queryItems ?? [] {
                switch (item.name, item.value ?? "") {
                case ("sslmode", let value):
                    guard let mode = TLSMode(rawValue: value) else {
                        throw Invalid(description: "sslmode must be disable, prefer or require, not \"\(value)\"")
                    }
                    tls = mode
                case ("host", let value) where value.hasPrefix("/"):
                    socketDirectory = value
                case (let name, _):
                    throw Invalid(description: "unknown URL parameter \"\(name)\" (known: sslmode, host=/SOCKET/DIRECTORY)")
                }
            }
            guard !host.isEmpty || socketDirectory != nil else { throw Invalid(description: "the URL names no host") }
            guard (1...65535).contains(port) else { throw Invalid(description: "port \(port) is out of range") }
        }

        /// The URL without its password, for logs and errors.
        public var redacted: String {
            "postgres://\(user)\(password == nil ? "" : ":***")@\(host):\(port)/\(database)"
                + (socketDirectory.map { "?host=\($0)" } ?? "")
        }

        func clientConfiguration() -> PostgresClient.Configuration {
            var configuration: PostgresClient.Configuration
            if let socketDirectory {
                configuration = .init(
                    unixSocketPath: socketDirectory + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
            } else {
                let tls: PostgresClient.Configuration.TLS = switch self.tls {
                case .disable: .disable
                case .prefer: .prefer(.makeClientConfiguration())
                case .require: .require(.makeClientConfiguration())
                }
                configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
            }
            configuration.options.maximumConnections = PostgresWhiteboard.connections
            configuration.options.connectTimeout = PostgresWhiteboard.connectTimeout
            // Durability does not depend on the server's settings: a commit is flushed before COMMIT answers.
            // A server that stopped answering mid-transaction (frozen, cut off) would hold the write lock until TCP gives up:
            // PostgreSQL ends such a session after 30 s, which releases its lock.
            configuration.options.additionalStartupParameters = [
                ("synchronous_commit", "on"), ("idle_in_transaction_session_timeout", "30s"), ("application_name", "upgradefs"),
            ]
            return configuration
        }
    }

    /// Runs `body` with the storage at `url`, migrated, over a running connection pool that is closed afterwards.
    /// An unreachable or refusing database throws `WhiteboardStorageUnavailable` (after `connectTimeout`).
    public static func withStorage<T: Sendable>(
        url: ConnectionURL, logger: Logger, _ body: @Sendable (PostgresWhiteboardStorage) async throws -> T
    ) async throws -> T {
        let storage = try await PostgresWhiteboardStorage.connect(url: url, logger: logger)
        defer { storage.close() }
        return try await body(storage)
    }

    /// `withStorage` with the ledger over it: the server's store on PostgreSQL.
    public static func withStore<T: Sendable>(
        url: ConnectionURL, verifier: any Ed25519Verifying, lockTTLSeconds: Double = WhiteboardLedger.defaultLockTTLSeconds,
        logger: Logger, _ body: @Sendable (LedgerWhiteboardStore<PostgresWhiteboardStorage>) async throws -> T
    ) async throws -> T {
        try await withStorage(url: url, logger: logger) { storage in
            try await body(LedgerWhiteboardStore(storage: storage, ledger: WhiteboardLedger(verifier: verifier, lockTTLSeconds: lockTTLSeconds)))
        }
    }
}
