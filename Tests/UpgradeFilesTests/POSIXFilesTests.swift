#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import UpgradeFiles

/// The durable-write helpers every file writer of the project goes through (metadata, blobs, key files).
struct POSIXFilesTests {
    final class Directory {
        let path = TemporaryDirectory("files-test").path
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
    }

    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
    }

    @Test func aTemporaryFileHoldsTheBytesWithTheModeAsked() throws {
        let dir = Directory()
        let path = try POSIXFiles.writeTemporary(Array("secret\n".utf8), in: dir.path, mode: 0o600, hint: "key")
        #expect(POSIXFiles.parentDirectory(of: path) == dir.path)
        #expect(dir.names.count == 1 && dir.names[0].hasPrefix(".tmp-") && dir.names[0].hasSuffix("-key"))
        #expect(try POSIXFiles.readFile(path) == Array("secret\n".utf8))
        #expect(Self.mode(path) == 0o600)
    }

    @Test func aTemporaryFileInAMissingDirectoryFailsWithThePath() {
        #expect {
            _ = try POSIXFiles.writeTemporary([1, 2, 3], in: "/nonexistent-upgradefs-dir", mode: 0o644)
        } throws: { error in
            (error as? FileError).map { $0.isNotFound && $0.path.hasPrefix("/nonexistent-upgradefs-dir/.tmp-") } ?? false
        }
    }

    @Test func anAtomicWriteReplacesAndLeavesNoTemporaryFile() throws {
        let dir = Directory()
        let path = dir.path + "/timestamp.json"
        try POSIXFiles.writeAtomically(Array("one".utf8), to: path)
        try POSIXFiles.writeAtomically(Array("two".utf8), to: path, mode: 0o600)
        #expect(try POSIXFiles.readFile(path) == Array("two".utf8))
        #expect(Self.mode(path) == 0o600)
        #expect(dir.names == ["timestamp.json"])
    }

    /// What key files rely on: without `replace`, an existing file is kept and the new bytes vanish.
    @Test func aWriteThatMustNotReplaceKeepsTheExistingFile() throws {
        let dir = Directory()
        let path = dir.path + "/server.key"
        try POSIXFiles.writeAtomically(Array("first".utf8), to: path, mode: 0o600, replace: false)
        #expect {
            try POSIXFiles.writeAtomically(Array("second".utf8), to: path, mode: 0o600, replace: false)
        } throws: { error in
            (error as? FileError)?.errno == EEXIST
        }
        #expect(try POSIXFiles.readFile(path) == Array("first".utf8))
        #expect(Self.mode(path) == 0o600)
        #expect(dir.names == ["server.key"])
    }

    /// Like ssh: a key file its group or others may read or write is refused, and the message says how to fix it.
    @Test(arguments: [mode_t(0o644), 0o640, 0o604, 0o620, 0o602, 0o660])
    func aKeyFileWithLooseModeIsRefusedWithTheFix(mode: mode_t) throws {
        let dir = Directory()
        let path = dir.path + "/server.key"
        try POSIXFiles.writeAtomically(Array("secret".utf8), to: path, mode: 0o600)
        chmod(path, mode)
        #expect {
            _ = try POSIXFiles.readSecret(path, limit: 1 << 10)
        } throws: { error in
            let text = "\(error)"
            return text.contains(path) && text.contains("mode 0\(String(mode, radix: 8))") && text.contains("chmod 600 \(path)")
        }
    }

    @Test(arguments: [mode_t(0o600), 0o400])
    func aKeyFileOnlyItsOwnerMayReadIsRead(mode: mode_t) throws {
        let dir = Directory()
        let path = dir.path + "/node.key"
        try POSIXFiles.writeAtomically(Array("secret".utf8), to: path, mode: mode)
        #expect(try POSIXFiles.readSecret(path, limit: 1 << 10) == Array("secret".utf8))
    }

    /// A file that claims a terabyte is refused from its size, before anything is allocated or read.
    @Test func aSparseTerabyteFileIsRefusedFromItsSize() throws {
        let dir = Directory()
        let path = dir.path + "/upgrade.toml"
        let fd = open(path, O_CREAT | O_WRONLY, 0o644)
        #expect(ftruncate(fd, 1 << 40) == 0)
        close(fd)
        let start = ContinuousClock.now
        #expect {
            _ = try POSIXFiles.readFile(path, limit: 64 << 10)
        } throws: { error in
            (error as? FileError)?.errno == EFBIG
        }
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    /// `openBeneath` follows no link at any component: a directory swapped for a link fails the open.
    @Test func openBeneathRefusesALinkAtAnyComponent() throws {
        let dir = Directory()
        let outside = Directory()
        try FileManager.default.createDirectory(atPath: dir.path + "/bundle/payload/sub", withIntermediateDirectories: true)
        try POSIXFiles.writeAtomically(Array("inside".utf8), to: dir.path + "/bundle/payload/sub/file")
        try FileManager.default.createDirectory(atPath: outside.path + "/sub", withIntermediateDirectories: true)
        try POSIXFiles.writeAtomically(Array("outside".utf8), to: outside.path + "/sub/file")
        let root = try POSIXFiles.open(dir.path + "/bundle", O_RDONLY | O_DIRECTORY)
        defer { close(root) }

        let fd = try POSIXFiles.openBeneath(root, "payload/sub/file", O_RDONLY, displayPath: "payload/sub/file")
        #expect(try POSIXFiles.readToEnd(fd, path: "file", limit: 100) == Array("inside".utf8))
        close(fd)

        // An intermediate directory swapped for a link to a look-alike tree outside.
        #expect(rename(dir.path + "/bundle/payload", dir.path + "/payload.aside") == 0)
        #expect(symlink(outside.path, dir.path + "/bundle/payload") == 0)
        #expect {
            _ = try POSIXFiles.openBeneath(root, "payload/sub/file", O_RDONLY, displayPath: "payload/sub/file")
        } throws: { error in
            [ELOOP, ENOTDIR].contains((error as? FileError)?.errno ?? 0)
        }
        // The last component a link.
        #expect(symlink(outside.path + "/sub/file", dir.path + "/bundle/last") == 0)
        #expect {
            _ = try POSIXFiles.openBeneath(root, "last", O_RDONLY, displayPath: "last")
        } throws: { error in
            (error as? FileError)?.errno == ELOOP
        }
        for bad in ["../bundle/last", "payload/../x", "", "a//b", "./x"] {
            #expect(throws: FileError.self) { _ = try POSIXFiles.openBeneath(root, bad, O_RDONLY, displayPath: bad) }
        }
    }
}
