import Foundation
import GRDB

/// What the node knows about one upgrade N (a row of `upgrades`).
public struct UpgradeRecord: Sendable, Equatable {
    public var version: Int64
    public var status: UpgradeStatus
    /// Upgrade attempts begun (an attempt is one run of the install steps).
    public var attempts: Int
    /// SF failures in a row (for the back-off); reset by an SF answer.
    public var sfFailures: Int
    /// When the SF may be asked again (Unix seconds; 0 = now).
    public var nextRunAt: Double
    public var lastError: String?
    /// The control word in force when the upgrade failed: only a change to `retry` after it retries.
    public var controlAtFailure: String?

    public init(version: Int64, status: UpgradeStatus = .pending, attempts: Int = 0, sfFailures: Int = 0,
                nextRunAt: Double = 0, lastError: String? = nil, controlAtFailure: String? = nil) {
        self.version = version
        self.status = status
        self.attempts = attempts
        self.sfFailures = sfFailures
        self.nextRunAt = nextRunAt
        self.lastError = lastError
        self.controlAtFailure = controlAtFailure
    }
}

/// The upgrade in flight: written before anything changes on disk, read on start to finish or undo it.
public struct UpgradeIntent: Sendable, Equatable {
    public var version: Int64
    /// The installed version before, F (0 = nothing installed): the generation a rollback puts back
    /// (column `from_generation`).
    public var fromInstalledVersion: Int64
    /// The node version before (column `from_version`): the SF's `UPGRADEFS_FROM`.
    public var fromNodeVersion: Int64
    /// The last step recorded as done.
    public var step: UpgradeStep
}

public struct LocalDatabaseError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let operation: String
    public let message: String
    public var description: String { "local database \(path): \(operation): \(message)" }
}

/// The node's LDB, `root/ldb/ldb.sqlite` (GRDB, WAL, `synchronous = FULL`): the node version, the installed
/// version, per-upgrade records and the intent journal (the `UpgradeStep` of the install in flight). Every method is one transaction.
public final class LocalDatabase: Sendable {
    public static let fileName = "ldb.sqlite"
    public let path: String
    private let database: DatabasePool

    public init(path: String) throws(LocalDatabaseError) {
        self.path = path
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            throw LocalDatabaseError(path: path, operation: "open", message: "\(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                CREATE TABLE upgrades(
                    version INTEGER PRIMARY KEY,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    sf_failures INTEGER NOT NULL,
                    next_run_at REAL NOT NULL,
                    last_error TEXT,
                    control_at_failure TEXT);
                CREATE TABLE intent(
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    version INTEGER NOT NULL,
                    from_generation INTEGER NOT NULL,
                    from_version INTEGER NOT NULL,
                    step TEXT NOT NULL);
                """)
        }
        migrator.registerMigration("v2-hooks") { db in
            try db.execute(sql: """
                CREATE TABLE hooks(
                    pgid INTEGER PRIMARY KEY,
                    start_ticks INTEGER NOT NULL,
                    boot_id TEXT NOT NULL,
                    session INTEGER NOT NULL,
                    label TEXT NOT NULL,
                    is_app_start INTEGER NOT NULL);
                """)
        }
        return migrator
    }

    private func run<T>(_ operation: String, _ body: () throws -> T) throws(LocalDatabaseError) -> T {
        do {
            return try body()
        } catch {
            throw LocalDatabaseError(path: path, operation: operation, message: "\(error)")
        }
    }

    // MARK: Versions

    /// The node version: the system version the node is at, applied or passed over (0 before anything).
    public func nodeVersion() throws(LocalDatabaseError) -> Int64 { try meta("version") }
    /// The installed version: of the node's class, the one `current -> gen/N` names (0 = none).
    public func installedVersion() throws(LocalDatabaseError) -> Int64 { try meta("installed") }

    private func meta(_ key: String) throws(LocalDatabaseError) -> Int64 {
        try run("read \(key)") {
            try database.read { db in
                try Row.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key])?.decode(forColumn: "value") ?? 0
            }
        }
    }

    private static func setMeta(_ db: Database, _ key: String, _ value: Int64) throws {
        try db.execute(sql: "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       arguments: [key, value])
    }

    /// Passes over upgrade N of another class: the node's version becomes N, nothing else changes.
    public func skip(version: Int64) throws(LocalDatabaseError) {
        try run("skip \(version)") {
            try database.write { db in
                try Self.save(db, UpgradeRecord(version: version, status: .skipped))
                try Self.setMeta(db, "version", version)
            }
        }
    }

    // MARK: Records

    public func record(_ version: Int64) throws(LocalDatabaseError) -> UpgradeRecord? {
        try run("read upgrade \(version)") {
            try database.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM upgrades WHERE version = ?", arguments: [version]).map(Self.record)
            }
        }
    }

    public func records() throws(LocalDatabaseError) -> [UpgradeRecord] {
        try run("read upgrades") {
            try database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM upgrades ORDER BY version").map(Self.record) }
        }
    }

    public func save(_ record: UpgradeRecord) throws(LocalDatabaseError) {
        try run("save upgrade \(record.version)") { try database.write { db in try Self.save(db, record) } }
    }

    /// Rows are decoded with `Row.decode`, which throws on a value of the wrong type (the subscript traps):
    /// a database edited behind the manager's back is an error naming it, never a crash or a guess.
    private static func record(_ row: Row) throws -> UpgradeRecord {
        let status: String = try row.decode(forColumn: "status")
        guard let known = UpgradeStatus(rawValue: status) else { throw Corrupt("upgrades: unknown status \"\(status)\"") }
        return UpgradeRecord(
            version: try row.decode(forColumn: "version"), status: known,
            attempts: try row.decode(forColumn: "attempts"), sfFailures: try row.decode(forColumn: "sf_failures"),
            nextRunAt: try row.decode(forColumn: "next_run_at"),
            lastError: try row.decode(forColumn: "last_error"), controlAtFailure: try row.decode(forColumn: "control_at_failure"))
    }

    /// What was found in the database that the manager never writes.
    struct Corrupt: Error, CustomStringConvertible {
        let description: String
        init(_ problem: String) { description = "corrupt: " + problem }
    }

    private static func save(_ db: Database, _ r: UpgradeRecord) throws {
        try db.execute(sql: """
            INSERT OR REPLACE INTO upgrades(version, status, attempts, sf_failures, next_run_at, last_error, control_at_failure)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """, arguments: [r.version, r.status.rawValue, r.attempts, r.sfFailures, r.nextRunAt, r.lastError, r.controlAtFailure])
    }

    // MARK: Intent journal

    public func intent() throws(LocalDatabaseError) -> UpgradeIntent? {
        try run("read intent") {
            try database.read { db in
                try Row.fetchOne(db, sql: "SELECT version, from_generation, from_version, step FROM intent").map { row in
                    let version: Int64 = try row.decode(forColumn: "version")
                    let from: Int64 = try row.decode(forColumn: "from_generation")
                    let fromVersion: Int64 = try row.decode(forColumn: "from_version")
                    let step: String = try row.decode(forColumn: "step")
                    // The journal decides what recovery removes and switches to: only what the manager writes.
                    guard let known = UpgradeStep(rawValue: step) else { throw Corrupt("intent: unknown step \"\(step)\"") }
                    guard version > 0, from >= 0, from < version, fromVersion >= from, fromVersion < version else {
                        throw Corrupt("intent: version \(version) from generation \(from), node version \(fromVersion)")
                    }
                    return UpgradeIntent(version: version, fromInstalledVersion: from, fromNodeVersion: fromVersion, step: known)
                }
            }
        }
    }

    /// Step `intent`: the intent to upgrade to `record.version` from installed version `fromInstalledVersion`
    /// (node version `fromNodeVersion`), and the attempt counted.
    public func begin(_ record: UpgradeRecord, fromInstalledVersion: Int64, fromNodeVersion: Int64) throws(LocalDatabaseError) {
        try run("record intent \(record.version)") {
            try database.write { db in
                try Self.save(db, record)
                try db.execute(sql: """
                    INSERT OR REPLACE INTO intent(id, version, from_generation, from_version, step) VALUES (1, ?, ?, ?, ?)
                    """, arguments: [record.version, fromInstalledVersion, fromNodeVersion, UpgradeStep.intent.rawValue])
            }
        }
    }

    public func recordStep(_ step: UpgradeStep) throws(LocalDatabaseError) {
        try run("record step \(step)") {
            try database.write { db in
                try db.execute(sql: "UPDATE intent SET step = ?", arguments: [step.rawValue])
            }
        }
    }

    /// Step `committed`: the upgrade is done. The intent stays (at `committed`) until `finish()`, so the reports after
    /// the commit are made again if the manager dies before they are.
    public func commit(version: Int64) throws(LocalDatabaseError) {
        try run("commit \(version)") {
            try database.write { db in
                try db.execute(sql: "UPDATE intent SET step = ?", arguments: [UpgradeStep.committed.rawValue])
                try Self.setMeta(db, "version", version)
                try Self.setMeta(db, "installed", version)
                let attempts: Int = try Row.fetchOne(db, sql: "SELECT attempts FROM upgrades WHERE version = ?", arguments: [version])?
                    .decode(forColumn: "attempts") ?? 1
                try Self.save(db, UpgradeRecord(version: version, status: .done, attempts: attempts))
            }
        }
    }

    /// Forgets the intent once everything after it has been done (the commit reported, or the rollback
    /// completed and `record` saved in the same transaction).
    public func finish(saving record: UpgradeRecord? = nil) throws(LocalDatabaseError) {
        try run("finish intent") {
            try database.write { db in
                if let record { try Self.save(db, record) }
                try db.execute(sql: "DELETE FROM intent")
            }
        }
    }

    // MARK: Programs running

    /// A program started in its own process group, recorded before the manager waits for it.
    public func recordHook(_ hook: HookProcess) throws(LocalDatabaseError) {
        try run("record process \(hook.pgid)") {
            try database.write { db in
                try db.execute(sql: """
                    INSERT OR REPLACE INTO hooks(pgid, start_ticks, boot_id, session, label, is_app_start) VALUES (?, ?, ?, ?, ?, ?)
                    """, arguments: StatementArguments([hook.pgid, hook.startTicks, hook.bootID, hook.session, hook.label,
                                                            hook.isAppStart] as [any DatabaseValueConvertible]))
            }
        }
    }

    private static func hook(_ row: Row) throws -> HookProcess {
        let pgid: pid_t = try row.decode(forColumn: "pgid"), session: pid_t = try row.decode(forColumn: "session")
        let startTicks: Int64 = try row.decode(forColumn: "start_ticks"), bootID: String = try row.decode(forColumn: "boot_id")
        let label: String = try row.decode(forColumn: "label"), isAppStart: Bool = try row.decode(forColumn: "is_app_start")
        return HookProcess(pgid: pgid, startTicks: startTicks, bootID: bootID, session: session, label: label, isAppStart: isAppStart)
    }

    public func forgetHook(_ pgid: pid_t) throws(LocalDatabaseError) {
        try run("forget process \(pgid)") {
            try database.write { db in try db.execute(sql: "DELETE FROM hooks WHERE pgid = ?", arguments: [pgid]) }
        }
    }

    /// The programs recorded as running (after a kill -9 of the manager: the ones it left behind).
    public func hooks() throws(LocalDatabaseError) -> [HookProcess] {
        try run("read processes") {
            try database.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM hooks ORDER BY pgid").map(Self.hook)
            }
        }
    }

    public func close() throws(LocalDatabaseError) {
        try run("close") { try database.close() }
    }
}
