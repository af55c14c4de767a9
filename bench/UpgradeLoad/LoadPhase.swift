import ArgumentParser
import Foundation
import UpgradeCore
import UpgradeWhiteboardClient

/// What a phase asks of the server, every simulated node in a closed loop (next request when the
/// answer is in).
enum LoadPhase: String, CaseIterable, Sendable, ExpressibleByArgument {
    /// `GET /metadata/timestamp.json`: the cheapest thing the server serves (a small file read from disk).
    case baseline
    /// `GET /v1/udb/snapshot`: the whole whiteboard, signed.
    case snapshot
    /// `GET /v1/udb/changes?after=R-1`: a node one change behind (answers at once, signed).
    case changes
    /// `POST /v1/udb/apply`: a signed put of the node's `nodes/NODE/heartbeat` on channel outbox.
    case apply
    /// `POST /v1/udb/apply`: a signed acquire of `locks/bench/NODE`, then its release, on channel direct.
    case lock

    var request: String {
        switch self {
        case .baseline: "GET /metadata/timestamp.json"
        case .snapshot: "GET /v1/udb/snapshot"
        case .changes: "GET /v1/udb/changes?after=R-1"
        case .apply: "POST apply: put heartbeat (outbox)"
        case .lock: "POST apply: acquire+release (direct)"
        }
    }

    static let lockName = "bench"
}

/// Latencies of the requests one phase measured, and what went wrong.
struct Samples: Sendable {
    var nanoseconds: [Int64] = []
    var errors = 0
    var firstError: String?

    mutating func merge(_ other: Samples) {
        nanoseconds += other.nanoseconds
        errors += other.errors
        firstError = firstError ?? other.firstError
    }

    /// Times one request; counts it only when it started at or after `measureFrom` (after the warm-up).
    /// `request` throws when the answer is not what the protocol promises.
    mutating func time(from measureFrom: ContinuousClock.Instant, _ request: () async throws -> Void) async {
        let started = ContinuousClock.now
        var problem: String?
        do { try await request() } catch { problem = "\(error)" }
        let elapsed = ContinuousClock.now - started
        guard started >= measureFrom else { return }
        let (seconds, attoseconds) = elapsed.components
        nanoseconds.append(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        if let problem {
            errors += 1
            firstError = firstError ?? problem
        }
    }
}

struct PhaseResult: Sendable {
    let phase: LoadPhase
    let nodes: Int
    let requests: Int
    let seconds: Double
    let errors: Int
    let firstError: String?
    let p50Milliseconds: Double
    let p99Milliseconds: Double
    var requestsPerSecond: Double { seconds > 0 ? Double(requests) / seconds : 0 }

    init(phase: LoadPhase, nodes: Int, samples: Samples, seconds: Double) {
        self.phase = phase
        self.nodes = nodes
        self.seconds = seconds
        requests = samples.nanoseconds.count
        errors = samples.errors
        firstError = samples.firstError
        let sorted = samples.nanoseconds.sorted()
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let index = min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)
            return Double(sorted[max(0, index)]) / 1_000_000
        }
        p50Milliseconds = percentile(0.50)
        p99Milliseconds = percentile(0.99)
    }
}

/// Runs one phase: every node in its own task, requests back to back for `warmup + duration`; only
/// requests started after the warm-up count. Each node's first answer of the phase is checked in full
/// (server signature, echoed nonce); writes are checked on every answer (status, result, nonce).
struct PhaseRunner: Sendable {
    let client: LoadClient
    let phase: LoadPhase
    let warmup: Duration
    let duration: Duration
    /// For `changes`: the revision just before the last one (so every answer holds one change).
    var changesAfter: Int64 = 0

    func run(_ nodes: [SimulatedNode]) async -> (nodes: [SimulatedNode], result: PhaseResult) {
        let measureFrom = ContinuousClock.now + warmup
        let deadline = measureFrom + duration
        var finished = nodes
        var samples = Samples()
        await withTaskGroup(of: (Int, SimulatedNode, Samples).self) { group in
            for (index, node) in nodes.enumerated() {
                group.addTask {
                    var node = node
                    var samples = Samples()
                    var first = true
                    while ContinuousClock.now < deadline {
                        await step(&node, verify: first, samples: &samples, measureFrom: measureFrom)
                        first = false
                    }
                    return (index, node, samples)
                }
            }
            for await (index, node, nodeSamples) in group {
                finished[index] = node
                samples.merge(nodeSamples)
            }
        }
        let measured = ContinuousClock.now - measureFrom
        let seconds = Double(measured.components.seconds) + Double(measured.components.attoseconds) / 1e18
        return (finished, PhaseResult(phase: phase, nodes: nodes.count, samples: samples, seconds: seconds))
    }

    private func step(_ node: inout SimulatedNode, verify: Bool, samples: inout Samples, measureFrom: ContinuousClock.Instant) async {
        switch phase {
        case .baseline:
            await samples.time(from: measureFrom) {
                let answer = try await client.get("/metadata/timestamp.json")
                guard answer.status == 200, !answer.body.isEmpty else {
                    throw LoadError("GET /metadata/timestamp.json answered HTTP \(answer.status)")
                }
            }
        case .snapshot:
            await samples.time(from: measureFrom) {
                _ = try await client.read("snapshot", verify: verify)
            }
        case .changes:
            await samples.time(from: measureFrom) {
                if let view = try await client.read("changes?after=\(changesAfter)", verify: verify), view.files.isEmpty && view.holders.isEmpty {
                    throw LoadError("changes?after=\(changesAfter) answered no change")
                }
            }
        case .apply:
            let heartbeat = Array("\(Int(Date().timeIntervalSince1970))\n".utf8)
            let signed = node.sign(.put, "nodes/\(node.name)/heartbeat", content: heartbeat)
            await samples.time(from: measureFrom) { try await apply(signed, verify: verify) }
        case .lock:
            let path = "locks/\(LoadPhase.lockName)/\(node.name)"
            let acquire = node.sign(.acquire, path)
            await samples.time(from: measureFrom) { try await apply(acquire, verify: verify) }
            let release = node.sign(.release, path)
            await samples.time(from: measureFrom) { try await apply(release, verify: verify) }
        }
    }

    /// Sends a signed write; the answer must be a fresh "ok" echoing the nonce. With `verify` it is judged the
    /// way the node's sender judges it (signature included); without, only its status, result and nonce are read,
    /// so that the load measures the server rather than this client's signature checks.
    private func apply(_ signed: (body: [UInt8], nonce: [UInt8]), verify: Bool) async throws {
        let answer = try await client.apply(signed.body)
        if verify {
            let outcome = WhiteboardDeliveryOutcome.classify(
                WhiteboardHTTPAnswer(status: answer.status, body: answer.body), sent: signed.body, nonce: signed.nonce,
                serverKey: client.serverKey)
            guard case .delivered(_, duplicate: false) = outcome else { throw LoadError("apply: \(outcome)") }
            return
        }
        guard answer.status == 200, let response = try? SignedWhiteboardResponse.decode(answer.body).response,
              response.nonce == signed.nonce, response.result == .ok
        else { throw LoadError("apply: HTTP \(answer.status): \(String(decoding: answer.body.prefix(200), as: UTF8.self))") }
    }
}
