#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import UpgradeFiles

/// The one way both key files write and read their secret, and how each failure is said.
struct SecretFileTests {
    let directory = TemporaryDirectory("secret-file")

    @Test func aSecretIsWrittenWithMode0600AndReadBack() throws {
        defer { directory.remove() }
        let path = directory.path + "/a.key"
        try SecretFile.write(Array("secret\n".utf8), to: path, overwrite: false)
        #expect(POSIXFilesTests.mode(path) == 0o600)
        #expect(try SecretFile.read(path, limit: 64, createdBy: "keygen") == Array("secret\n".utf8))
    }

    @Test func anExistingFileIsReplacedOnlyWhenAsked() throws {
        defer { directory.remove() }
        let path = directory.path + "/a.key"
        try SecretFile.write(Array("one\n".utf8), to: path, overwrite: false)
        #expect { try SecretFile.write(Array("two\n".utf8), to: path, overwrite: false) } throws: {
            "\($0)" == "already exists (not overwritten)"
        }
        try SecretFile.write(Array("two\n".utf8), to: path, overwrite: true)
        #expect(try SecretFile.read(path, limit: 64, createdBy: "keygen") == Array("two\n".utf8))
    }

    @Test func aMissingFileNamesTheCommandThatMakesIt() {
        defer { directory.remove() }
        #expect { try SecretFile.read(directory.path + "/none", limit: 64, createdBy: "upgradefs keygen --out x") } throws: {
            "\($0)" == "does not exist (create one with `upgradefs keygen --out x`)"
        }
    }

    @Test func aFileOthersMayReadIsRefusedWithTheFix() throws {
        defer { directory.remove() }
        let path = directory.path + "/a.key"
        try SecretFile.write(Array("secret\n".utf8), to: path, overwrite: false)
        chmod(path, 0o640)
        #expect { try SecretFile.read(path, limit: 64, createdBy: "keygen") } throws: {
            "\($0)" == "has mode 0640: its group or others may read or write it, so it is not used (fix: chmod 600 \(path))"
        }
    }
}
