import ArgumentParser
import AsyncHTTPClient
import Foundation
import UpgradeCore
import UpgradeWhiteboardClient

/// Measures the server phase by phase for each number of simulated nodes and prints a table.
struct LoadRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Measure the server with 1, 16, 64, … simulated nodes and print requests/s and latencies.",
        discussion: """
        The nodes' keys come from `upgradefs-load keygen` (n1 … nN and operator, all enrolled). Before \
        measuring, the operator sets locks/\(LoadPhase.lockName)/capacity high enough for every node and \
        every node puts its heartbeat once, so every snapshot holds one file per node. Exits 1 when any \
        request failed or answered something other than what the protocol promises.
        """
    )

    @Option(help: "The server, http://HOST:PORT.")
    var server: String

    @Option(help: "The server id (52 characters); when given, the server's 1.root.json must match it.")
    var id: String?

    @Option(help: "Directory of the key files written by `upgradefs-load keygen`.")
    var keys: String

    @Option(help: "Comma-separated numbers of simulated nodes, one round of phases each.")
    var nodes: String = "1,16,64,256"

    @Option(help: "Comma-separated phases: \(LoadPhase.allCases.map(\.rawValue).joined(separator: ", ")).")
    var phases: String = LoadPhase.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Measured seconds per phase.")
    var seconds: Double = 5

    @Option(help: "Warm-up seconds before each phase's measurement (connections opened, not counted).")
    var warmup: Double = 0.5

    func validate() throws {
        guard !nodeCounts.isEmpty, nodeCounts.allSatisfy({ (1...10_000).contains($0) }) else {
            throw ValidationError("--nodes must be numbers from 1 to 10000, e.g. 1,16,64,256")
        }
        guard phaseList != nil else { throw ValidationError("--phases: one or more of \(LoadPhase.allCases.map(\.rawValue))") }
        guard seconds > 0, seconds <= 600, warmup >= 0, warmup <= 60 else {
            throw ValidationError("--seconds must be in (0, 600] and --warmup in [0, 60]")
        }
    }

    private var nodeCounts: [Int] { nodes.split(separator: ",").compactMap { Int($0) } }
    private var phaseList: [LoadPhase]? {
        let list = phases.split(separator: ",").map { LoadPhase(rawValue: String($0)) }
        return list.isEmpty || list.contains(nil) ? nil : list.compactMap { $0 }
    }

    func run() async throws {
        let counts = nodeCounts
        let phaseList = phaseList ?? LoadPhase.allCases
        let total = counts.max()!
        let firstSeq = SimulatedNode.firstSeqNow()
        var simulated = try SimulatedNode.names(count: total).map {
            SimulatedNode(try NodeKeyFile.load(from: SimulatedNode.keyPath(directory: keys, name: $0)), firstSeq: firstSeq)
        }
        var operatorNode = SimulatedNode(
            try NodeKeyFile.load(from: SimulatedNode.keyPath(directory: keys, name: WhiteboardRules.operatorName)), firstSeq: firstSeq)

        let http = LoadClient.makeHTTPClient(connections: total + 4)
        do {
            let client = try await LoadClient.connect(http: http, baseURL: server, serverID: id)
            simulated = try await prepare(client, nodes: simulated, operatorNode: &operatorNode)
            let snapshot = try await client.read("snapshot", verify: true)!
            let snapshotBytes = try await client.get("/v1/udb/snapshot").body.count
            let whiteboard = "whiteboard before the phases: revision \(snapshot.revision), \(snapshot.files.count) files, "
                + "snapshot answer \(snapshotBytes) bytes; lock \(LoadPhase.lockName) capacity \(total)"
            log(whiteboard)

            var results: [PhaseResult] = []
            for count in counts {
                for phase in phaseList {
                    var runner = PhaseRunner(client: client, phase: phase, warmup: .seconds(warmup), duration: .seconds(seconds))
                    if phase == .changes {
                        runner.changesAfter = try await client.read("snapshot", verify: true)!.revision - 1
                    }
                    let (after, result) = await runner.run(Array(simulated[0..<count]))
                    simulated.replaceSubrange(0..<count, with: after)
                    results.append(result)
                    log("\(count) nodes, \(phase.request): \(result.requests) requests, "
                        + String(format: "%.0f req/s, p50 %.2f ms, p99 %.2f ms", result.requestsPerSecond,
                                 result.p50Milliseconds, result.p99Milliseconds)
                        + ", errors \(result.errors)" + (result.firstError.map { " (first: \($0))" } ?? ""))
                }
            }
            print(whiteboard)
            print("")
            printTable(results)
            try await http.shutdown()
            if results.contains(where: { $0.errors > 0 }) { throw ExitCode.failure }
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    /// Gives the lock room for every node and every node one heartbeat file.
    private func prepare(_ client: LoadClient, nodes: [SimulatedNode], operatorNode: inout SimulatedNode) async throws -> [SimulatedNode] {
        let capacity = operatorNode.sign(.put, "locks/\(LoadPhase.lockName)/capacity", content: Array("\(nodes.count)\n".utf8))
        try await Self.expectOK(client, capacity, what: "operator: put lock capacity")
        return try await withThrowingTaskGroup(of: SimulatedNode.self) { group in
            for node in nodes {
                group.addTask {
                    var node = node
                    let signed = node.sign(.put, "nodes/\(node.name)/heartbeat", content: Array("\(Int(Date().timeIntervalSince1970))\n".utf8))
                    try await Self.expectOK(client, signed, what: "\(node.name): first heartbeat")
                    return node
                }
            }
            var prepared: [String: SimulatedNode] = [:]
            for try await node in group { prepared[node.name] = node }
            return nodes.map { prepared[$0.name]! }
        }
    }

    private static func expectOK(_ client: LoadClient, _ signed: (body: [UInt8], nonce: [UInt8]), what: String) async throws {
        let answer = try await client.apply(signed.body)
        let outcome = WhiteboardDeliveryOutcome.classify(
            WhiteboardHTTPAnswer(status: answer.status, body: answer.body), sent: signed.body, nonce: signed.nonce, serverKey: client.serverKey)
        guard case .delivered(_, duplicate: false) = outcome else { throw LoadError("\(what): \(outcome)") }
    }

    private func log(_ line: String) {
        FileHandle.standardError.write(Data(("upgradefs-load: " + line + "\n").utf8))
    }

    /// A Markdown table; "vs baseline" is the phase's requests/s over the baseline's at the same node count.
    private func printTable(_ results: [PhaseResult]) {
        print("| nodes | request | requests | req/s | p50 ms | p99 ms | vs baseline | errors |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for result in results {
            let baseline = results.first { $0.phase == .baseline && $0.nodes == result.nodes }
            let ratio = baseline.map { String(format: "%.2f", result.requestsPerSecond / max($0.requestsPerSecond, 1e-9)) } ?? "n/a"
            print("| \(result.nodes) | \(result.phase.request) | \(result.requests) | "
                + String(format: "%.0f | %.2f | %.2f", result.requestsPerSecond, result.p50Milliseconds, result.p99Milliseconds)
                + " | \(ratio) | \(result.errors) |")
        }
    }
}
