/// The PostgreSQL schema of the whiteboard, as numbered migrations recorded in `upgradefs_schema` (one row per
/// version applied). The tables are SQLite's (docs/DESIGN.md, "Storage (server)") in PostgreSQL's types: paths and
/// names `text COLLATE "C"` (compared and ordered byte by byte whatever the database's collation, so a path prefix is
/// an index range; the database must be UTF8), contents and keys `bytea`, times `double precision` (Unix seconds),
/// revisions `bigint`.
enum PostgresWhiteboardSchema {
    static let versionTable = """
        CREATE TABLE IF NOT EXISTS upgradefs_schema(
            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
        """

    /// Migration N is `migrations[N - 1]`, its statements in order. Append only: a migration applied somewhere is
    /// never changed.
    static let migrations: [[String]] = [
        [
            #"CREATE TABLE meta(key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL)"#,
            "INSERT INTO meta(key, value) VALUES ('revision', 0)",
            #"CREATE TABLE nodes(name text COLLATE "C" PRIMARY KEY, public_key bytea NOT NULL, enrolled_at double precision NOT NULL)"#,
            """
            CREATE TABLE channels(node text COLLATE "C" NOT NULL, channel text COLLATE "C" NOT NULL, last_seq bigint NOT NULL, last_digest bytea,
                                  refused_code text COLLATE "C", refused_error text COLLATE "C", PRIMARY KEY(node, channel))
            """,
            """
            CREATE TABLE files(path text COLLATE "C" PRIMARY KEY, content bytea, revision bigint NOT NULL,
                               modified_at double precision NOT NULL, writer text COLLATE "C" NOT NULL)
            """,
            "CREATE INDEX files_revision ON files(revision)",
            "CREATE INDEX files_writer ON files(writer) WHERE content IS NOT NULL",
            """
            CREATE TABLE holders("lock" text COLLATE "C" NOT NULL, holder text COLLATE "C" NOT NULL, node text COLLATE "C" NOT NULL,
                                 acquired_at double precision NOT NULL, revision bigint NOT NULL,
                                 released boolean NOT NULL DEFAULT false, PRIMARY KEY("lock", holder))
            """,
            "CREATE INDEX holders_revision ON holders(revision)",
            """
            CREATE TABLE refusals(node text COLLATE "C" PRIMARY KEY, enrolled boolean NOT NULL, total bigint NOT NULL,
                                  refusing boolean NOT NULL, last_at double precision NOT NULL, last_code text COLLATE "C" NOT NULL,
                                  last_error text COLLATE "C" NOT NULL)
            """,
            #"CREATE TABLE upgrades(version bigint PRIMARY KEY, class text COLLATE "C" NOT NULL)"#,
            #"CREATE TABLE sessions(node text COLLATE "C" PRIMARY KEY, instance text COLLATE "C" NOT NULL, renewed_at double precision NOT NULL)"#,
        ],
    ]

    struct NewerSchema: Error, CustomStringConvertible {
        let found: Int
        var description: String {
            "the upgrade database's schema is version \(found), newer than this upgradefs knows (\(migrations.count)): "
                + "upgrade upgradefs, or point --udb at another database"
        }
    }

    /// The migrations a database at schema `current` still needs, numbered; refuses one from a newer upgradefs.
    static func pending(current: Int) throws -> [(Int, [String])] {
        guard current <= migrations.count else { throw NewerSchema(found: current) }
        return (current..<migrations.count).map { ($0 + 1, migrations[$0]) }
    }
}
