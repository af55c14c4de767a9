#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// A real node mount writing through `upgradefs serve --udb postgres://…` to a real PostgreSQL: what it wrote is in
/// PostgreSQL, also across a kill -9 of the server and a crash of PostgreSQL, the mount keeping its writes journaled
/// meanwhile.
@Suite(.serialized) struct WhiteboardPostgresTests {
    @Test(.realMounts, .postgres) func nodeWritesReachPostgreSQLAcrossServerAndDatabaseCrashes() throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        let udb = try cluster.createDatabase()
        let database = String(udb.split(separator: "/").last!.split(separator: "?").first!)
        let server = try ServeProcess(arguments: ["--udb", udb])
        let key = try server.enroll("n1", udb: udb)
        let mount = try TestMount()
        if let failure = try mount.start(server.source, nodeKey: key) {
            Issue.record("mount failed (\(failure.status)): \(failure.log)")
            return
        }
        defer { mount.unmount() }
        /// The state PostgreSQL holds for n1.
        func stored() -> String? {
            try? cluster.psql("SELECT convert_from(content, 'UTF8') FROM files WHERE path = 'nodes/n1/state'", database: database)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        #expect(Posix.write(mount.path("self/state"), "running\n") == 0)
        #expect(Harness.waitUntil(15) { stored() == "running" }, "\(mount.log.suffix(2000))")

        // The server killed -9: the write is journaled on the node and delivered to the restarted server.
        server.stop(signal: SIGKILL)
        #expect(Posix.write(mount.path("self/state"), "upgrading\n") == 0)
        #expect(Posix.read(mount.path("self/state")) == "upgrading\n")
        try server.start()
        #expect(Harness.waitUntil(30) { stored() == "upgrading" }, "\(mount.log.suffix(2000))")

        // PostgreSQL crashed under the running server: the server answers 503, the node keeps the write and
        // delivers it once PostgreSQL is back.
        cluster.stop(immediate: true)
        #expect(Posix.write(mount.path("self/state"), "idle\n") == 0)
        #expect(Posix.read(mount.path("self/state")) == "idle\n")
        try cluster.start()
        #expect(Harness.waitUntil(40) { stored() == "idle" }, "\(mount.log.suffix(2000))\n\(server.log.suffix(2000))")
        #expect(server.isRunning)
    }
}
