import Foundation
import Logging
import Synchronization
import Testing
import UpgradeCore
@testable import UpgradeNode
@testable import UpgradeWhiteboardClient

/// The whiteboard's files without a mount: what a path is on a node, who may write what, the lock-holder table and
/// how long the kernel may keep an answer. The store is a dictionary that checks writes as the journal does.
struct WhiteboardTreeTests {
    /// A store in memory: the node's view, checked like the journal's `enqueue`, and a lock server that answers
    /// what the test says.
    final class MemoryStore: WhiteboardTreeStore {
        let node: String
        let files = Mutex<[String: [UInt8]]>([:])
        /// The next lock operation's answer (nil: granted at the next revision).
        let lockAnswer = Mutex<WhiteboardLockClient.Failure.Reason?>(nil)
        let revision = Mutex<Int64>(0)
        let commits = Mutex<[String]>([])

        init(node: String, files: [String: String] = [:]) {
            self.node = node
            self.files.withLock { $0 = files.mapValues { Array($0.utf8) } }
        }

        func content(at path: String) throws(WhiteboardJournalError) -> [UInt8]? { files.withLock { $0[path] } }

        func paths(withPrefix prefix: String) throws(WhiteboardJournalError) -> [String] {
            files.withLock { $0.keys.filter { $0.hasPrefix(prefix) }.sorted() }
        }

        func commit(_ op: WhiteboardJournal.Op, path: String, content: [UInt8]?) throws(WhiteboardJournalError) {
            let stored = try WhiteboardJournal.check(node: node, op: op, path: path, content: content)
            files.withLock { $0[path] = stored }
            commits.withLock { $0.append("\(op.rawValue) \(path)") }
        }

        func lock(_ op: WhiteboardOp, path: String) -> Result<Int64, WhiteboardLockClient.Failure> {
            if let reason = lockAnswer.withLock({ $0 }) { return .failure(.init(reason, message: "as the test says")) }
            return .success(revision.withLock { $0 += 1; return $0 })
        }

        func text(_ path: String) -> String? { files.withLock { $0[path] }.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// A tree over a memory store, with the helpers a script's commands amount to.
    struct Board {
        let store: MemoryStore
        let holders = WhiteboardHolders()
        let tree: WhiteboardTree

        init(node: String = "n1", files: [String: String] = [:]) {
            store = MemoryStore(node: node, files: files)
            tree = WhiteboardTree(node: node, store: store, holders: holders, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        }

        static let files: [String: String] = [
            "nodes/n1/state": "idle\n", "nodes/n2/state": "running\n", "upgrades/3/summary": "done 2\n", "shared/plan": "a\n",
        ]

        /// The inode of `path` (relative to `udb/`), looked up name by name as the kernel does.
        func ino(_ path: String) throws -> UInt64 {
            var ino = WhiteboardTree.rootInode
            for name in path.split(separator: "/") { ino = try tree.lookup(parent: ino, name: String(name)).ino }
            return ino
        }

        func parentAndName(_ path: String) throws -> (UInt64, String) {
            let parent = path.split(separator: "/").dropLast().joined(separator: "/")
            return (try ino(parent), String(path.split(separator: "/").last!))
        }

        /// Writes `text` as `echo text > path` does (create or open with O_TRUNC, one write, close).
        func write(_ path: String, _ text: String) throws {
            let (parent, name) = try parentAndName(path)
            let handle: UInt64
            if (try? tree.lookup(parent: parent, name: name)) == nil {
                handle = try tree.create(parent: parent, name: name, append: false).handle
            } else {
                handle = try tree.open(ino: try ino(path), .init(writing: true, truncate: true))
            }
            defer { tree.release(handle: handle) }
            _ = try Array(text.utf8).withUnsafeBytes { bytes in
                try tree.write(handle: handle, offset: 0, data: bytes)
            }
            try tree.flush(handle: handle)
        }

        func mkdir(_ path: String) throws {
            let (parent, name) = try parentAndName(path)
            _ = try tree.mkdir(parent: parent, name: name)
        }

        func rmdir(_ path: String) throws {
            let (parent, name) = try parentAndName(path)
            try tree.rmdir(parent: parent, name: name)
        }
    }

    // MARK: what a path is

    @Test func pathsMeanWhatTheWhiteboardSaysOnThisNode() throws {
        let t = Board(node: "n1", files: Board.files)
        #expect(try t.tree.item(at: "") == .directory(writable: false))
        #expect(try t.tree.item(at: "shared") == .directory(writable: true))
        #expect(try t.tree.item(at: "locks") == .directory(writable: true))
        #expect(try t.tree.item(at: "nodes") == .directory(writable: false))
        #expect(try t.tree.item(at: "nodes/n1") == .directory(writable: true))
        #expect(try t.tree.item(at: "nodes/n2") == .directory(writable: false), "another node's directory is read-only")
        #expect(try t.tree.item(at: "nodes/n1/state") == .file(size: 5, writable: true))
        #expect(try t.tree.item(at: "nodes/n2/state") == .file(size: 8, writable: false))
        #expect(try t.tree.item(at: "upgrades/3/summary") == .file(size: 7, writable: false), "summaries are the server's")
        #expect(try t.tree.item(at: "locks/roll") == .directory(writable: true), "every lock exists as soon as it is named")
        #expect(try t.tree.item(at: "upgrades/4") == nil, "only the operator sees upgrades not yet published")
        #expect(try t.tree.item(at: "nodes/n3") == nil)
        #expect(try t.tree.readdir(ino: t.ino("nodes")).map(\.name) == ["n1", "n2"])
        #expect(try t.tree.readdir(ino: t.ino("")).map(\.name) == ["locks", "nodes", "shared", "upgrades"])
        #expect(try t.tree.readlink(ino: WhiteboardTree.selfInode) == "udb/nodes/n1")
        #expect(throws: WhiteboardTreeError.notALink) { try t.tree.readlink(ino: t.ino("nodes")) }
        #expect(throws: WhiteboardTreeError.notADirectory) { try t.tree.readdir(ino: t.ino("shared/plan")) }
        #expect(throws: WhiteboardTreeError.notFound) { try t.ino("nodes/n2/version") }
    }

    @Test func theOperatorSeesEveryUpgradeDirectoryAndMayWriteEveryNodesFiles() throws {
        let t = Board(node: WhiteboardRules.operatorName, files: Board.files)
        #expect(try t.tree.item(at: "upgrades/4") == .directory(writable: true))
        #expect(try t.tree.item(at: "nodes/n2/state") == .file(size: 8, writable: true))
        try t.write("upgrades/4/control", "pause\n")
        #expect(t.store.text("upgrades/4/control") == "pause\n")
        try t.write("nodes/n2/state", "paused\n")
        #expect(throws: WhiteboardTreeError.forbidden, "heartbeat and log stay the node's") {
            try t.write("nodes/n2/heartbeat", "1\n")
        }
    }

    // MARK: who may write what

    @Test func aNodeWritesItsOwnFilesAndSharedButNothingElse() throws {
        let t = Board(node: "n1", files: Board.files)
        try t.write("nodes/n1/state", "upgrading\n")
        try t.write("nodes/n1/notes", "anything\n")
        try t.write("shared/plan", "b\n")
        #expect(t.store.text("nodes/n1/state") == "upgrading\n")
        #expect(t.store.text("shared/plan") == "b\n")
        #expect(throws: WhiteboardTreeError.forbidden) { try t.write("nodes/n2/state", "idle\n") }
        #expect(throws: WhiteboardTreeError.forbidden) { try t.write("upgrades/3/control", "go\n") }
        #expect(throws: WhiteboardTreeError.forbidden) { try t.write("upgrades/3/summary", "x\n") }
        #expect(throws: WhiteboardTreeError.forbidden) { try t.write("nodes/n2/mine", "x\n") }
        #expect(throws: WhiteboardTreeError.forbidden) {
            try t.tree.unlink(parent: try t.ino("nodes/n2"), name: "state")
        }
        #expect(throws: WhiteboardTreeError.forbidden, "nothing may be made beside the top directories") {
            try t.mkdir("mine")
        }
        #expect(t.store.text("nodes/n2/state") == "running\n")
        try t.tree.unlink(parent: try t.ino("nodes/n1"), name: "notes")
        #expect(t.store.text("nodes/n1/notes") == nil)
    }

    @Test func contentThatBreaksTheFilesFormatIsMalformedAndTooMuchIsTooLarge() throws {
        let t = Board(node: "n1", files: Board.files)
        #expect(throws: WhiteboardTreeError.malformed) { try t.write("nodes/n1/state", "two words\n") }
        #expect(throws: WhiteboardTreeError.tooLarge) {
            try t.write("shared/big", String(repeating: "x", count: WhiteboardRules.maxFileBytes + 1))
        }
        try t.write("nodes/n1/log", String(repeating: "x", count: WhiteboardRules.maxFileBytes + 1))
        #expect(t.store.text("nodes/n1/state") == "idle\n")
    }

    @Test func anEmptyTruncationIsCommittedOnlyWhereAnEmptyFileIsValid() throws {
        let t = Board(node: "n1", files: Board.files)
        let state = try t.tree.open(ino: t.ino("nodes/n1/state"), .init(writing: true, truncate: true))
        try t.tree.flush(handle: state)
        t.tree.release(handle: state)
        #expect(t.store.text("nodes/n1/state") == "idle\n", "a state cannot be empty: the truncation waits for a write")
        let plan = try t.tree.open(ino: t.ino("shared/plan"), .init(writing: true, truncate: true))
        try t.tree.flush(handle: plan)
        t.tree.release(handle: plan)
        #expect(t.store.text("shared/plan") == "")
    }

    @Test func attributesAndRenameStayAsTheyAre() throws {
        let t = Board(node: "n1", files: Board.files)
        #expect(throws: WhiteboardTreeError.attributesFixed) {
            try t.tree.setattr(ino: t.ino("nodes/n1/state"), size: nil, changesModeOrOwner: true)
        }
        #expect(throws: WhiteboardTreeError.crossDevice) { try t.tree.rename() }
        #expect(try t.tree.setattr(ino: t.ino("shared/plan"), size: 1, changesModeOrOwner: false).0
            == .file(size: 1, writable: true))
        #expect(t.store.text("shared/plan") == "a")
        #expect(throws: WhiteboardTreeError.badHandle) { try t.tree.read(handle: 99, offset: 0, size: 1) }
    }

    // MARK: locks and the holder table

    @Test func mkdirAcquiresAndRmdirReleasesThroughTheOneHolderTable() throws {
        let t = Board()
        try t.mkdir("locks/roll/n1")
        #expect(t.holders.isHeld("locks/roll/n1"))
        #expect(try t.tree.item(at: "locks/roll/n1") == .directory(writable: false))
        #expect(try t.tree.readdir(ino: t.ino("locks/roll")).map(\.name) == ["n1"])
        try t.rmdir("locks/roll/n1")
        #expect(!t.holders.isHeld("locks/roll/n1"))
        #expect(try t.tree.item(at: "locks/roll/n1") == nil)
    }

    @Test func holdersTheFollowerReportsShowInTheTreeAndAnOlderReportLosesToAnOwnAcquire() throws {
        let t = Board()
        t.holders.apply([WhiteboardHolder(lock: "roll", holder: "n2", node: "n2", acquiredAt: 0, revision: 1)],
                        replacingAll: true, revision: 1)
        #expect(try t.tree.readdir(ino: t.ino("locks/roll")).map(\.name) == ["n2"])
        #expect(try t.tree.lookup(parent: t.ino("locks/roll"), name: "n2").item == .directory(writable: false))
        t.store.revision.withLock { $0 = 4 }
        try t.mkdir("locks/roll/n1")  // granted at revision 5
        t.holders.apply([WhiteboardHolder(lock: "roll", holder: "n1", node: "n1", acquiredAt: 0, revision: 3, released: true)],
                        replacingAll: false, revision: 3)
        #expect(try t.tree.readdir(ino: t.ino("locks/roll")).map(\.name) == ["n1", "n2"], "an older report loses")
    }

    @Test func aLockOperationsFailureSaysWhy() throws {
        let t = Board()
        let cases: [(WhiteboardLockClient.Failure.Reason, WhiteboardTreeError)] = [
            (.full, .lockFull), (.alreadyHeld, .lockAlreadyHeld), (.notHeld, .lockNotHeld), (.forbidden, .forbidden),
            (.conflict, .lockConflict), (.unreachable, .offline), (.failed, .lockFailed),
        ]
        for (reason, error) in cases {
            t.store.lockAnswer.withLock { $0 = reason }
            #expect(throws: error) { try t.mkdir("locks/roll/n1") }
            #expect(!t.holders.isHeld("locks/roll/n1"))
        }
    }

    // MARK: how long the kernel may keep an answer

    @Test func holdersAndFilesAreNeverKeptNamesAndDirectoriesForASecond() throws {
        let t = Board(node: "n1", files: Board.files)
        let state = try t.tree.lookup(parent: t.ino("nodes/n1"), name: "state")
        #expect(state.entryTimeout == WhiteboardTree.nameTimeout && state.attributeTimeout == 0)
        let nodes = try t.tree.lookup(parent: WhiteboardTree.rootInode, name: "nodes")
        #expect(nodes.entryTimeout == 1 && nodes.attributeTimeout == 1)
        let holder = try t.tree.mkdir(parent: t.ino("locks/roll"), name: "n1")
        #expect(holder.entryTimeout == 0 && holder.attributeTimeout == 0)
        #expect(try t.tree.getattr(ino: holder.ino).timeout == 0)
        #expect(t.tree.lookupRoot(name: "udb")?.item == .directory(writable: false))
        #expect(t.tree.lookupRoot(name: "self")?.item == .symlink)
        #expect(t.tree.lookupRoot(name: "latest") == nil)
    }

    @Test func theKernelForgetsOnlyNamesItWasToldOfThatAreGone() throws {
        let t = Board(node: "n1", files: Board.files)
        _ = try t.ino("nodes/n2/state")
        let n2 = try t.ino("nodes/n2")
        t.store.files.withLock { $0["nodes/n2/state"] = nil; $0["nodes/n3/state"] = nil }
        let forgotten = t.tree.namesToForget(changed: ["nodes/n2/state", "shared/plan", "nodes/n3/state"])
        #expect(forgotten.map(\.name) == ["state"], "shared/plan is still there; the kernel never saw nodes/n3")
        #expect(forgotten.first?.parent == n2)
    }

    // MARK: errnos

    /// The errnos README.md's table promises, and the others the mount answers.
    @Test func eachErrorHasTheErrnoScriptsSee() {
        let table: [(WhiteboardTreeError, Int32)] = [
            (.lockFull, EBUSY), (.lockAlreadyHeld, EEXIST), (.offline, EHOSTUNREACH), (.lockNotHeld, ENOENT),
            (.forbidden, EACCES), (.malformed, EINVAL), (.tooLarge, EFBIG), (.journal, EIO), (.lockFailed, EIO),
            (.notFound, ENOENT), (.notADirectory, ENOTDIR), (.lockConflict, ENOTDIR), (.isADirectory, EISDIR),
            (.exists, EEXIST), (.notEmpty, ENOTEMPTY), (.notALink, EINVAL), (.attributesFixed, EPERM),
            (.badHandle, EBADF), (.crossDevice, EXDEV),
        ]
        for (error, errno) in table { #expect(WhiteboardFileSystem.errno(for: error) == errno, "\(error)") }
    }

    // MARK: the mount's router

    @Test func theRouterSendsEachInodeAndRootNameToItsSubtree() {
        let routes = MountRoutes(hasWhiteboard: true)
        #expect(routes.subtree(of: BundleTree.rootInode) == .bundles)
        #expect(routes.subtree(of: 42) == .bundles)
        #expect(routes.subtree(of: WhiteboardTree.rootInode) == .whiteboard)
        #expect(routes.subtree(of: WhiteboardTree.selfInode) == .whiteboard)
        #expect(routes.subtree(of: "udb", in: BundleTree.rootInode) == .whiteboard)
        #expect(routes.subtree(of: "self", in: BundleTree.rootInode) == .whiteboard)
        #expect(routes.subtree(of: "latest", in: BundleTree.rootInode) == .bundles)
        #expect(routes.subtree(of: "udb", in: 42) == .bundles)
        #expect(routes.subtree(of: "state", in: WhiteboardTree.rootInode + 5) == .whiteboard)
        let withoutKey = MountRoutes(hasWhiteboard: false)
        #expect(withoutKey.subtree(of: "udb", in: BundleTree.rootInode) == .bundles)
        #expect(withoutKey.subtree(of: WhiteboardTree.rootInode) == .bundles)
    }
}
