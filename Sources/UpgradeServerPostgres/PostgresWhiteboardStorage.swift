import Foundation
import Logging
import PostgresNIO
import _ConnectionPoolModule
import Synchronization
import UpgradeCore
import UpgradeServer

/// The whiteboard's rows in PostgreSQL (`serve --udb postgres://…`). Storage only: the rules are `WhiteboardLedger`'s.
/// Design, schema and error mapping: docs/DESIGN.md, "PostgreSQL storage (server)".
///
/// - Every write transaction takes one advisory lock (`writeLockKey`) first, in READ COMMITTED: writers, from this
///   process or any other on the same database, run one at a time, so each sees the state the previous one committed
///   (serializable for writers) and the revision it allocates is committed before the next one is allocated.
/// - Reads run in REPEATABLE READ READ ONLY: one snapshot, no lock.
/// - The ledger's transaction body is synchronous: it runs on one of a few threads of their own (never the async pool
///   nor an event loop), which wait for each statement's answer.
/// - A commit is durable before the call returns (`synchronous_commit = on` for every session).
/// - Unreachable or refusing database: `WhiteboardStorageUnavailable`; a serialization failure or deadlock is tried
///   again (at most `maxAttempts` times).
public final class PostgresWhiteboardStorage: WhiteboardStorage {
    /// The advisory lock every write transaction holds ("upgdfs" + 1). Other upgradefs locks use other keys.
    public static let writeLockKey: Int64 = 0x7570_6764_6673_0001
    static let maxAttempts = 5

    let client: PostgresClient
    let logger: Logger
    /// How long a call waits for a connection before it answers "unavailable".
    let connectTimeout: Duration
    /// How long one statement may go unanswered (`PostgresSession.deadline`).
    let statementDeadline: Duration
    /// Half the threads run writes, half reads: a read never waits behind a write that waits for the write lock
    /// (held by another server, say).
    private let writeRunners: [BlockingRunner]
    private let readRunners: [BlockingRunner]
    private let next = Mutex<UInt>(0)

    /// The pool's `run()`, until `close()` or the storage goes away.
    private let running: Task<Void, Never>

    /// A storage over a new pool of `threads` connections to `configuration`; `migrate()` before the first use.
    init(
        configuration: PostgresClient.Configuration, threads: Int, connectTimeout: Duration, statementDeadline: Duration,
        logger: Logger
    ) {
        // The pool logs each failed connection attempt at info: while PostgreSQL is down that is every back-off
        // step; the calls answered "unavailable" are logged by the server instead.
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        let client = PostgresClient(configuration: configuration, backgroundLogger: background)
        self.client = client
        self.logger = logger
        self.connectTimeout = connectTimeout
        self.statementDeadline = statementDeadline
        writeRunners = (0..<max(1, threads / 2)).map { BlockingRunner(name: "upgradefs-udb-write-\($0)") }
        readRunners = (0..<max(1, threads - threads / 2)).map { BlockingRunner(name: "upgradefs-udb-read-\($0)") }
        running = Task { await client.run() }
    }

    /// Connects to `url` and migrates. An unreachable or refusing database: `WhiteboardStorageUnavailable`.
    public static func connect(
        url: PostgresWhiteboard.ConnectionURL, statementDeadline: Duration = PostgresWhiteboard.statementDeadline, logger: Logger
    ) async throws -> PostgresWhiteboardStorage {
        let storage = PostgresWhiteboardStorage(
            configuration: url.clientConfiguration(), threads: PostgresWhiteboard.connections,
            connectTimeout: PostgresWhiteboard.connectTimeout, statementDeadline: statementDeadline, logger: logger)
        do {
            try await storage.migrate()
        } catch {
            storage.close()
            throw error
        }
        return storage
    }

    /// Closes the pool's connections; calls after it fail.
    public func close() { running.cancel() }

    deinit { running.cancel() }

    public func write<T: Sendable>(_ body: @escaping @Sendable (inout PostgresWhiteboardTransaction) throws -> T) async throws -> T {
        return try await transaction(writing: true) { session in
            try session.run("BEGIN ISOLATION LEVEL READ COMMITTED")
            return try session.committing {
                try session.run("SELECT pg_advisory_xact_lock(\(Self.writeLockKey))")
                var transaction = PostgresWhiteboardTransaction(session: session)
                return try body(&transaction)
            }
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (PostgresWhiteboardTransaction) throws -> T) async throws -> T {
        return try await transaction(writing: false) { session in
            try session.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return try session.committing {
                try body(PostgresWhiteboardTransaction(session: session))
            }
        }
    }

    /// Brings the schema to `PostgresWhiteboardSchema.migrations.count`, holding the write lock (several servers
    /// starting at once migrate one after the other). Refuses a database a newer upgradefs migrated further.
    public func migrate() async throws {
        try await transaction(writing: true) { session in
            try session.run("BEGIN ISOLATION LEVEL READ COMMITTED")
            try session.committing {
                try session.run("SELECT pg_advisory_xact_lock(\(Self.writeLockKey))")
                try session.run(PostgresQuery(unsafeSQL: PostgresWhiteboardSchema.versionTable))
                let current = try session.rows("SELECT COALESCE(MAX(version), 0)::bigint FROM upgradefs_schema")
                    .first.map { try $0.decode(Int64.self) } ?? 0
                let pending = try PostgresWhiteboardSchema.pending(current: Int(current))
                for (index, sql) in pending {
                    for statement in sql { try session.run(PostgresQuery(unsafeSQL: statement)) }
                    try session.run("INSERT INTO upgradefs_schema(version) VALUES (\(index))")
                    session.logger.info("upgrade database migrated", metadata: ["udb.schema": .stringConvertible(index)])
                }
            }
        }
    }

    /// The schema version the database is at (0: none yet).
    public func schemaVersion() async throws -> Int {
        return try await transaction(writing: false) { session in
            let exists = try session.rows("SELECT to_regclass('upgradefs_schema') IS NOT NULL")
            guard try exists.first?.decode(Bool.self) == true else { return 0 }
            return Int(try session.rows("SELECT COALESCE(MAX(version), 0)::bigint FROM upgradefs_schema")
                .first.map { try $0.decode(Int64.self) } ?? 0)
        }
    }

    /// Runs `work` on a leased connection, on one of the storage's threads; tries again on a serialization failure
    /// or deadlock; an unreachable or refusing database becomes `WhiteboardStorageUnavailable`.
    private func transaction<T: Sendable>(
        writing: Bool, _ work: @escaping @Sendable (PostgresSession) throws -> T
    ) async throws -> T {
        let runners = writing ? writeRunners : readRunners
        let runner = next.withLock { index in
            defer { index &+= 1 }
            return runners[Int(index % UInt(runners.count))]
        }
        var attempt = 1
        while true {
            do {
                let (logger, deadline) = (logger, statementDeadline)
                return try await withConnection { connection in
                    try await runner.run { try work(PostgresSession(connection: connection, logger: logger, deadline: deadline)) }
                }
            } catch {
                switch PostgresErrorKind(error) {
                case .retry where attempt < Self.maxAttempts:
                    attempt += 1
                    logger.debug("upgrade database transaction retried", metadata: ["error": .string(PostgresErrorKind.describe(error))])
                case .retry, .unavailable:
                    throw WhiteboardStorageUnavailable(PostgresErrorKind.describe(error))
                case .bug, nil:
                    throw error
                }
            }
        }
    }

    /// A connection from the pool, or `WhiteboardStorageUnavailable` when none comes within `connectTimeout` (the
    /// pool keeps trying to connect meanwhile, so the database coming back needs nothing here).
    private func withConnection<T: Sendable>(_ work: @Sendable @escaping (PostgresConnection) async throws -> T) async throws -> T {
        let (client, timeout) = (client, connectTimeout)
        let leased = LeaseFlag()
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await client.withConnection { connection in
                    leased.set()
                    return try await work(connection)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            while let first = try await group.next() {
                if let value = first {
                    group.cancelAll()
                    return value
                }
                // The deadline: give up only when no connection was leased (a transaction under way finishes).
                if !leased.isSet {
                    group.cancelAll()
                    throw WhiteboardStorageUnavailable("no connection to PostgreSQL within \(timeout)")
                }
            }
            throw WhiteboardStorageUnavailable("no connection to PostgreSQL")
        }
    }
}

/// Whether a connection was leased (set from the leasing task, read by the one waiting for the deadline).
final class LeaseFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// Runs synchronous work on a thread of its own (the transaction bodies wait for PostgreSQL's answers).
actor BlockingRunner {
    private let executor: ThreadExecutor

    init(name: String) { executor = ThreadExecutor(name: name) }

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    func run<T: Sendable>(_ work: @Sendable () throws -> T) throws -> T { try work() }
}

/// What to do about an error of PostgresNIO (nil: not one of its errors, e.g. `WhiteboardStorageUnavailable`).
enum PostgresErrorKind: Equatable {
    /// A serialization failure or deadlock: the transaction was rolled back, run it again.
    case retry
    /// The database cannot be reached, is shutting down or starting, or is out of resources: answer "unavailable".
    case unavailable
    /// Anything else (a wrong statement, a constraint): a bug, reported as it is.
    case bug

    init?(_ error: any Error) {
        switch error {
        case let error as PSQLError: self.init(psql: error)
        // The pool's: a request cancelled (the connect deadline), the pool shut down, or — after a minute without
        // a connection — its circuit breaker failing every request at once.
        case is ConnectionPoolError: self = .unavailable
        case is ChannelError, is IOError: self = .unavailable
        default: return nil
        }
    }

    init(psql error: PSQLError) {
        guard error.code == .server else {
            self = error.code == .queryCancelled || error.code == .tooManyParameters || error.code == .invalidCommandTag
                ? .bug : .unavailable
            return
        }
        self = Self(sqlState: error.serverInfo?[.sqlState] ?? "")
    }

    /// By SQLSTATE (PostgreSQL's appendix A).
    init(sqlState: String) {
        switch sqlState {
        case "40001", "40P01": self = .retry
        case "57P01", "57P02", "57P03", "53300", "53200", "53100", "25006":
            // Shutting down, starting up, too many connections, out of memory or disk; read-only (a standby).
            self = .unavailable
        default:
            // Class 08: connection exceptions.
            self = sqlState.hasPrefix("08") ? .unavailable : .bug
        }
    }

    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return message + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
        }
        return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
    }
}

/// A leased connection as the storage's threads use it: each statement waited for, at most `deadline`.
struct PostgresSession: Sendable {
    let connection: PostgresConnection
    let logger: Logger
    /// Past it the connection is closed and the call is "unavailable": a database that stopped answering (frozen,
    /// or the network dropping packets without a reset) does not hold a thread, a connection and a request forever.
    let deadline: Duration

    /// Runs one statement and waits for it (never on an event loop: on a `BlockingRunner`'s thread).
    func run(_ query: PostgresQuery) throws {
        _ = try rows(query)
    }

    /// Runs one statement and waits for its rows.
    func rows(_ query: PostgresQuery) throws -> [PostgresRow] {
        let answer = connection.query(query, logger: logger)
        let answered = DispatchSemaphore(value: 0)
        answer.whenComplete { _ in answered.signal() }
        let (seconds, attoseconds) = deadline.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        guard answered.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success else {
            connection.close().whenComplete { _ in }
            throw WhiteboardStorageUnavailable("PostgreSQL did not answer within \(deadline)")
        }
        return try answer.wait().rows
    }

    /// `body` inside the transaction just begun: COMMIT when it returns, ROLLBACK when it throws.
    func committing<T>(_ body: () throws -> T) throws -> T {
        let result: T
        do {
            result = try body()
        } catch {
            try? run("ROLLBACK")
            throw error
        }
        try run("COMMIT")
        return result
    }
}
