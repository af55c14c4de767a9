#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles

/// The durable-write helpers every file writer of the project goes through (metadata, blobs, key files).
struct POSIXFilesTests {
    final class Directory {
        let path: String
        init() {
            var template = Array((NSTemporaryDirectory() + "/upgradefs-files-test-XXXXXX").utf8CString)
            path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        }
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
}
