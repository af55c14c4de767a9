#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeCore
@testable import UpgradeServer

/// Each kind of bad bundle is refused with its reason beside it, and nothing
/// already published changes.
@Suite(.serialized) struct RejectionTests {
    /// Publishes a good version 1, then drops `name` and returns its `.rejected` text.
    func rejectionReason(
        limits: BundleLimits = .default, version: Int = 2, extraManifest: String = "",
        _ customize: @escaping (String) -> Void
    ) async throws -> String? {
        let fixture = ServerFixture(limits: limits)
        let publisher = try fixture.makePublisher()
        fixture.bundles.make("good", version: 1)
        fixture.bundles.drop("good")
        #expect(await publisher.scanOnce() == [.published(bundle: "good", version: 1)])
        let before = fixture.metadataSnapshot()
        let blobsBefore = try FileManager.default.subpathsOfDirectory(atPath: fixture.configuration.stateDirectory + "/blobs")

        fixture.bundles.make("bad", version: version, extraManifest: extraManifest, customize: customize)
        fixture.bundles.drop("bad")
        let outcomes = await publisher.scanOnce()
        let reason = fixture.marker("bad", ".rejected")
        #expect(outcomes == [.rejected(bundle: "bad", reason: reason?.trimmingCharacters(in: .newlines) ?? "?")])
        #expect(fixture.marker("bad", ".published") == nil)
        #expect(fixture.metadataSnapshot() == before, "published metadata changed")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: fixture.configuration.stateDirectory + "/blobs") == blobsBefore)
        #expect(await publisher.latestVersion == 1)
        // Not looked at again while the marker is there.
        #expect(await publisher.scanOnce() == [])
        #expect(reason?.hasSuffix("\n") == true && reason?.dropLast().contains("\n") == false, "one line")
        return reason
    }

    @Test func symlinkEscapingWithDotDotIsRejected() async throws {
        let reason = try await rejectionReason { Files.symlink("../../../etc/passwd", at: $0 + "/payload/escape") }
        #expect(reason == "payload/escape: symlink target \"../../../etc/passwd\" leaves the bundle\n")
    }

    @Test func absoluteSymlinkIsRejected() async throws {
        let reason = try await rejectionReason { Files.symlink("/etc/passwd", at: $0 + "/payload/abs") }
        #expect(reason == "payload/abs: symlink target \"/etc/passwd\" is absolute\n")
    }

    @Test func deviceFileIsRejected() async throws {
        let reason = try await rejectionReason { root in
            #expect(mknod(root + "/payload/null", S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0, "mknod needs root")
        }
        #expect(reason == "payload/null: device files are not allowed\n")
    }

    @Test func fifoIsRejected() async throws {
        let reason = try await rejectionReason { #expect(mkfifo($0 + "/payload/pipe", 0o644) == 0) }
        #expect(reason == "payload/pipe: FIFOs (named pipes) are not allowed\n")
    }

    @Test func versionNotAboveLatestIsRejected() async throws {
        let reason = try await rejectionReason(version: 1) { _ in }
        #expect(reason == "upgrade.toml: version 1 is not above the latest published version 1\n")
    }

    @Test func missingManifestIsRejected() async throws {
        let reason = try await rejectionReason { unlink($0 + "/upgrade.toml") }
        #expect(reason == "missing manifest: the bundle has no upgrade.toml\n")
    }

    @Test func unknownManifestKeyIsRejected() async throws {
        let reason = try await rejectionReason(extraManifest: "verison = 3\n") { _ in }
        #expect(reason == "invalid manifest: upgrade.toml: key \"verison\" unknown key (did you mean \"version\"?)\n")
    }

    @Test func fileOverSizeLimitIsRejected() async throws {
        let reason = try await rejectionReason(limits: BundleLimits(maxFileBytes: 5000)) {
            Files.write($0 + "/payload/big", [UInt8](repeating: 7, count: 5001))
        }
        #expect(reason == "payload/big: file of 5001 bytes is larger than the limit of 5000 bytes\n")
    }

    @Test func nonUTF8FileNameIsRejected() async throws {
        let reason = try await rejectionReason { root in
            let name = Array((root + "/payload/bad-").utf8) + [0xFF, 0]
            let fd = name.withUnsafeBufferPointer { open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644) }
            #expect(fd >= 0)
            close(fd)
        }
        #expect(reason?.contains("file name is not valid UTF-8") == true)
    }

    @Test func hugeManifestIsRejected() async throws {
        let reason = try await rejectionReason { root in
            Files.write(root + "/upgrade.toml", "class = \"kvstore\"\nversion = 2\n" + String(repeating: "# padding\n", count: 7000))
        }
        #expect(reason == "upgrade.toml: the manifest is larger than 65536 bytes\n")
    }

    @Test func deletingTheRejectedMarkerRetries() async throws {
        let fixture = ServerFixture()
        let publisher = try fixture.makePublisher()
        fixture.bundles.make("b", version: 1) { unlink($0 + "/sf"); Files.write($0 + "/sf", "not executable") }
        fixture.bundles.drop("b")
        #expect(await publisher.scanOnce() == [.rejected(bundle: "b", reason: "sf: sf is not executable")])
        chmod(fixture.publishDirectory + "/b/sf", 0o755)
        #expect(await publisher.scanOnce() == [])
        unlink(fixture.publishDirectory + "/b.rejected")
        #expect(await publisher.scanOnce() == [.published(bundle: "b", version: 1)])
    }
}
