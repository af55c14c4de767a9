import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// The store-level half of `UDBAttackTests` (a hostile enrolled node, a forger without the key), over every storage:
/// the same requests, the verdicts by code instead of HTTP status (the HTTP tests keep the wire half).
extension WhiteboardStoreConformanceTests {
    // MARK: - A node writing what is not its own

    @Test(arguments: StorageKind.tested) func nodeWritingAnotherNodesFilesControlFilesOrSummariesIsRefused(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/class", "kvstore")).result == .ok)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/state", "running")).result == .ok)
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "1")).result == .ok)
        let before = try await store.snapshot()
        for (op, path, content) in WhiteboardAttacks.foreignWrites {
            let outcome = try await store.apply(n1.request(op, path, content))
            #expect(outcome.code == .forbidden, "\(op) \(path): \(outcome)")
        }
        // The operator may set a node's state, not forge its heartbeat or log.
        #expect(try await store.apply(op.request(.put, "nodes/n2/heartbeat", "1")).code == .forbidden)
        #expect(try await store.apply(op.request(.put, "nodes/n2/log", "forged")).code == .forbidden)
        #expect(try await store.snapshot().files == before.files)
    }

    @Test(arguments: StorageKind.tested) func nodeClaimingAClassCountsOnlyOnceInThatUpgradesSummary(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        try await store.registerUpgrade(3, class: "kvstore")
        #expect(try await store.apply(n2.request(.put, "nodes/n2/class", "kvstore\n")).result == .ok)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/state", "running")).result == .ok)
        for content in ["kvstore", "kvstore\n", "kvstore"] { #expect(try await store.apply(n1.request(.put, "nodes/n1/class", content)).result == .ok) }
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "failed")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/n2", "failed")).result == .ok)
        #expect(try await store.snapshot().content("upgrades/3/summary") == "failed 1\nrunning 1\n")
        // A name that is not enrolled counts nowhere, whatever it sends.
        #expect(try await store.apply(WhiteboardWriter("n3").request(.put, "nodes/n3/class", "kvstore")).code == .unauthenticated)
        #expect(try await store.snapshot().content("upgrades/3/summary") == "failed 1\nrunning 1\n")
    }

    // MARK: - Path tricks and sizes

    @Test(arguments: StorageKind.tested) func pathTricksDotDotPercentControlBytesAndOverlongNamesAreRefused(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/state", "running")).result == .ok)
        let before = try await store.snapshot()
        for path in WhiteboardAttacks.pathTricks {
            let outcome = try await store.apply(n1.request(.put, path, "failed"))
            #expect(outcome.code == .malformed, "\(path.debugDescription): \(outcome)")
        }
        // A literal "%2e%2e" or a look-alike is just a name of the node's own: it changes nothing of n2's.
        #expect(try await store.apply(n1.request(.put, "nodes/n1/%2e%2e", "x")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/\u{0455}tate", "failed")).result == .ok)
        let after = try await store.snapshot()
        #expect(after.content("nodes/n2/state") == "running")
        #expect(after.files.filter { !$0.path.hasPrefix("nodes/n1/") } == before.files)
    }

    @Test(arguments: StorageKind.tested) func contentJustAbove64KiBIsRefused(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let limit = WhiteboardRules.maxFileBytes
        #expect(try await store.apply(n1.request(.put, "shared/x", String(repeating: "a", count: limit))).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/y", String(repeating: "a", count: limit + 1))).code == .malformed)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/other", String(repeating: "a", count: limit + 1))).code == .malformed)
    }

    /// A directory whose name is not ASCII conflicts with a file in it like any other (a prefix compared by
    /// characters, not bytes).
    @Test(arguments: StorageKind.tested) func fileAndDirectoryWithANonASCIINameCannotShareAPath(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n1.request(.put, "shared/é/b", "x")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/é", "x")).code == .conflict)
        #expect(try await store.apply(n1.request(.put, "shared/ü", "x")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/ü/c", "x")).code == .conflict)
    }

    /// `é` precomposed (NFC) and `e` + U+0301 (NFD) are one name to a Swift string comparison, two to the file system
    /// and to SQLite: they are two files, and the snapshot lists paths in the order of their bytes.
    @Test(arguments: StorageKind.tested) func canonicallyEquivalentPathsAreTwoFilesInByteOrder(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let composed = "shared/\u{E9}", decomposed = "shared/e\u{301}"
        #expect(try await store.apply(n1.request(.put, composed, "nfc")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/z", "z")).result == .ok)
        #expect(try await store.apply(n1.request(.put, decomposed, "nfd")).result == .ok)
        let snapshot = try await store.snapshot()
        #expect(snapshot.files.map { Array($0.path.utf8) } == [decomposed, "shared/z", composed].map { Array($0.utf8) })
        #expect(snapshot.files.map(\.content) == ["nfd", "z", "nfc"].map { Array($0.utf8) })
    }

    @Test(arguments: StorageKind.tested) func nodeFillingTheWhiteboardWithFilesOrBytesStopsAtItsQuota(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let n3 = WhiteboardWriter("n3")
        try await store.enroll(node: "n3", publicKey: n3.key.publicKey)
        var codes: [WhiteboardErrorBody.Code?: Int] = [:]
        for index in 0..<1100 { codes[try await store.apply(n1.request(.put, "shared/f\(index)", "x")).code, default: 0] += 1 }
        #expect(codes == [nil: WhiteboardRules.maxFilesPerWriter, .forbidden: 1100 - WhiteboardRules.maxFilesPerWriter])
        // Overwriting one of its files, and writing after deleting one, still works.
        #expect(try await store.apply(n1.request(.put, "shared/f0", "y")).result == .ok)
        #expect(try await store.apply(n1.request(.delete, "shared/f1")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "running")).result == .ok)
        // Bytes: 64 KiB files up to 1 MiB in all.
        let big = String(repeating: "b", count: WhiteboardRules.maxFileBytes)
        codes = [:]
        for index in 0..<20 { codes[try await store.apply(n2.request(.put, "shared/big\(index)", big)).code, default: 0] += 1 }
        #expect(codes == [nil: 16, .forbidden: 4])
        #expect(try await store.apply(n2.request(.put, "nodes/n2/log", big)).message
            == "n2 may not write nodes/n2/log: its files would hold \(16 * 65536 + 65536) bytes, at most \(1 << 20)")
        // Other nodes and the operator are not held back by it.
        #expect(try await store.apply(n3.request(.put, "shared/mine", "z")).result == .ok)
        #expect(try await store.apply(op.request(.put, "upgrades/3/control", "pause")).result == .ok)
    }

    // MARK: - Signature and seq tricks

    @Test(arguments: StorageKind.tested) func requestNamingAnotherNodeOrReusingANonceIsNotAnotherNodesWrite(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        // A request signed by n1 naming n2: not authenticated.
        var named = n1.request(.put, "nodes/n2/state", "failed").request
        named.node = "n2"
        #expect(try await store.apply(named.signed(by: n1.key)).code == .unauthenticated)
        #expect(try await store.snapshot().files.isEmpty)
        // The seq, not the nonce, tells requests apart: a second request reusing a nonce is a new request; the first,
        // sent again, is a replay.
        let first = n1.request(.put, "nodes/n1/state", "idle")
        var second = n1.request(.put, "nodes/n1/state", "running").request
        second.nonce = first.request.nonce
        #expect(try await store.apply(first).result == .ok)
        #expect(try await store.apply(second.signed(by: n1.key)).result == .ok)
        #expect(try await store.apply(first).code == .replayed)
        #expect(try await store.snapshot().content("nodes/n1/state") == "running")
    }

    @Test(arguments: StorageKind.tested) func seqAtInt64MaxWithoutTheKeyCannotLockANodeOut(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let attacker = Ed25519KeyPair.generate()
        for seq in [Int64.max, 1 << 62] {
            let forged = WhiteboardRequest(
                node: "n1", channel: .outbox, seq: seq, op: .put, path: "nodes/n1/state", content: Array("idle".utf8),
                nonce: Sodium.randomBytes(16))
            #expect(try await store.apply(forged.signed(by: attacker)).code == .unauthenticated)
        }
        // The node's own next write still goes through: nothing above moved its replay counter.
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "running", seq: 1)).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "idle", seq: 2)).result == .ok)
    }

    // MARK: - Lock abuse

    @Test(arguments: StorageKind.tested) func holderNamedAfterAnotherNodeOrHeldByAnotherNodeIsNotHandedOut(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let n3 = WhiteboardWriter("n3")
        try await store.enroll(node: "n3", publicKey: n3.key.publicKey)
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "5")).result == .ok)
        let squat = try await store.apply(n1.request(.acquire, "locks/roll/n2"))
        #expect(squat.code == .forbidden)
        #expect(squat.message == "n1 may not acquire locks/roll/n2: holder n2 is node n2's name")
        #expect(try await store.apply(n2.request(.acquire, "locks/roll/n2")).result == .ok)
        // A free-text holder another node holds: forbidden to others, `exists` only to its holder.
        #expect(try await store.apply(n3.request(.acquire, "locks/roll/slot")).result == .ok)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/slot")).code == .forbidden)
        #expect(try await store.apply(n3.request(.acquire, "locks/roll/slot")).code == .exists)
        // Releasing another node's holder is refused; the operator may.
        #expect(try await store.apply(n1.request(.release, "locks/roll/n2")).code == .forbidden)
        #expect(try await store.apply(n1.request(.release, "locks/roll/slot")).code == .forbidden)
        #expect(try await store.snapshot().holders.map(\.holder) == ["n2", "slot"])
        #expect(try await store.apply(op.request(.release, "locks/roll/slot")).result == .ok)
    }

    @Test(arguments: StorageKind.tested)
    func acquiringThousandsOfHoldersStopsAtCapacityAndPerNodeLimitAndBadCapacitiesAreRefused(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        for capacity in WhiteboardAttacks.badCapacities {
            #expect(try await store.apply(op.request(.put, "locks/roll/capacity", capacity)).code == .malformed, "\(capacity.debugDescription)")
        }
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "3")).result == .ok)
        var codes: [WhiteboardErrorBody.Code?: Int] = [:]
        for index in 0..<1000 { codes[try await store.apply(n1.request(.acquire, "locks/roll/h\(index)")).code, default: 0] += 1 }
        #expect(codes == [nil: 3, .full: 997])
        #expect(try await store.snapshot().holders.count == 3)
        // Across locks (each with its own capacity of 1): at most `maxHoldersPerNode` holders per node.
        let limit = WhiteboardRules.maxHoldersPerNode
        codes = [:]
        for index in 0..<1000 { codes[try await store.apply(n2.request(.acquire, "locks/l\(index)/n2")).code, default: 0] += 1 }
        #expect(codes == [nil: limit, .forbidden: 1000 - limit])
        #expect(try await store.snapshot().holders.filter { $0.node == "n2" }.count == limit)
        #expect(try await store.apply(n2.request(.release, "locks/l0/n2")).result == .ok)
        #expect(try await store.apply(n2.request(.acquire, "locks/l999/n2")).result == .ok)
        // A huge capacity is the operator's word; it parses and bounds nothing else.
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "999999999999999999")).result == .ok)
    }
}
