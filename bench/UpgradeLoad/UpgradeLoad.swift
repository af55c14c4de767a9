import ArgumentParser

/// `upgradefs-load`: drives a running `upgradefs serve` on loopback with many simulated nodes and
/// reports what the server sustains (bench/run.sh runs it; docs/BENCHMARKS.md, "The whiteboard under load", has figures).
@main
struct UpgradeLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgradefs-load",
        abstract: "Load-test an upgradefs server's whiteboard with many simulated nodes.",
        discussion: """
        First `keygen` writes the simulated nodes' keys and prints their enrollment lines (enroll each \
        with `upgradefs enroll --state DIR NAME KEY`); then `run` measures, phase by phase, reads \
        (GET /v1/udb/snapshot, /v1/udb/changes) and signed writes (POST /v1/udb/apply) beside a baseline \
        (GET /metadata/timestamp.json of the same server).
        """,
        subcommands: [LoadKeygenCommand.self, LoadRunCommand.self]
    )
}
