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
        #expect(reason == "payload/escape: symlink target \"../../../etc/passwd\" leaves the payload directory \"payload\" (the installed release)\n")
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

    @Test func hardLinkToFileOutsidePublishDirIsRejected() async throws {
        let outside = TemporaryDirectory()
        defer { outside.remove() }
        Files.write(outside.path + "/shadow", "root:secret-hash:19000::::::\n", mode: 0o600)
        let reason = try await rejectionReason { root in
            #expect(link(outside.path + "/shadow", root + "/payload/shadow") == 0)
        }
        #expect(reason == "payload/shadow: file has 2 hard links (another name may be outside the bundle); copy it instead\n")
    }

    /// A 1 TiB sparse manifest is judged from its size: nothing is read or allocated for it.
    @Test func sparseTerabyteManifestIsRejectedWithoutReadingIt() async throws {
        let reason = try await rejectionReason { root in
            #expect(truncate(root + "/upgrade.toml", 1 << 40) == 0)
        }
        #expect(reason == "upgrade.toml: the manifest is larger than 65536 bytes\n")
    }

    /// 2,045 directories deep: longer than PATH_MAX from the publish directory. The walk (openat from
    /// the bundle's descriptor) judges it: the first path over 1024 bytes is named.
    @Test func bundle2045DirectoriesDeepIsRejected() async throws {
        var bundleRoot = ""
        defer { if !bundleRoot.isEmpty { removeTree(bundleRoot) } }
        let reason = try await rejectionReason { root in
            // The fixture's directory (the bundle moves from staging to publish): removed whole afterwards.
            bundleRoot = ((root as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
            makeDeepTree(root + "/payload", depth: 2045)
        }
        let tooLong = "payload/" + Array(repeating: "d", count: 509).joined(separator: "/")
        #expect(reason == "\(tooLong): unsafe path: is 1025 bytes long, at most 1024 allowed\n")
    }

    @Test func versionInt64MaxIsRejectedAndLaterBundlesStillPublish() async throws {
        let fixture = ServerFixture()
        let publisher = try fixture.makePublisher()
        fixture.bundles.make("huge", version: Int.max)
        fixture.bundles.drop("huge")
        let reason = "upgrade.toml: version 9223372036854775807 is more than 1000 above the latest published version 0 (at most 1000)"
        #expect(await publisher.scanOnce() == [.rejected(bundle: "huge", reason: reason)])
        fixture.bundles.make("gap", version: 1000)
        fixture.bundles.drop("gap")
        #expect(await publisher.scanOnce() == [.published(bundle: "gap", version: 1000)])
        fixture.bundles.make("next", version: 1001)
        fixture.bundles.drop("next")
        #expect(await publisher.scanOnce() == [.published(bundle: "next", version: 1001)])
    }

    @Test func payloadLinkThatLeavesTheInstalledReleaseIsRejected() async throws {
        let reason = try await rejectionReason(extraManifest: "payload = \"a/b/c/d/e/f\"\n") { root in
            Files.write(root + "/a/b/c/d/e/f/app", "app\n", mode: 0o755)
            Files.mkdir(root + "/etc")
            Files.symlink("../../../../../../etc", at: root + "/a/b/c/d/e/f/etc")
        }
        #expect(reason == "a/b/c/d/e/f/etc: symlink target \"../../../../../../etc\" leaves the payload directory \"a/b/c/d/e/f\" (the installed release)\n")
    }

    /// Between the scan and the copy the payload directory is swapped for a link to a look-alike tree
    /// outside (same names, same sizes). The copy walks beneath the bundle without following links: it
    /// fails, nothing from outside reaches the content store, and once the tree is put back the real
    /// content is published.
    @Test func directorySwappedForASymlinkBetweenScanAndCopyIsNotCopied() async throws {
        let fixture = ServerFixture()
        let publisher = try fixture.makePublisher()
        let outside = TemporaryDirectory()
        defer { outside.remove() }
        Files.write(outside.path + "/bin/app", [UInt8](repeating: 0x53, count: 3000 + "binary of version 1\n".utf8.count), mode: 0o755)
        Files.write(outside.path + "/README", "SECRETS\n")
        let secretBlobs = [Files.sha256(Files.read(outside.path + "/bin/app")!), Files.sha256(Array("SECRETS\n".utf8))]
        fixture.bundles.make("swap", version: 1)
        fixture.bundles.drop("swap")
        let payload = fixture.publishDirectory + "/swap/payload"
        let aside = fixture.temporary.path + "/payload.aside"
        await publisher.setTestHookBeforeCopy { _ in
            #expect(rename(payload, aside) == 0)
            #expect(symlink(outside.path, payload) == 0)
        }
        #expect(await publisher.scanOnce() == [.waiting(bundle: "swap")])
        await publisher.setTestHookBeforeCopy(nil)
        for hex in secretBlobs {
            #expect(!Files.exists(fixture.configuration.stateDirectory + "/blobs/sha256/\(hex.prefix(2))/\(hex)"))
        }
        #expect(await publisher.latestVersion == 0)

        unlink(payload)
        #expect(rename(aside, payload) == 0)
        #expect(await publisher.scanOnce() == [.published(bundle: "swap", version: 1)])
        let targets = await publisher.targets.targets
        #expect(targets["1/payload/README"]?.sha256 == Files.sha256(Array("read me\n".utf8)))
        for hex in secretBlobs {
            #expect(!Files.exists(fixture.configuration.stateDirectory + "/blobs/sha256/\(hex.prefix(2))/\(hex)"))
        }
    }
}

/// `depth` nested directories named `d` under `path`, made with mkdirat/openat (the full path is longer than PATH_MAX).
func makeDeepTree(_ path: String, depth: Int) {
    Files.mkdir(path)
    var fd = open(path, O_RDONLY | O_DIRECTORY)
    for _ in 0..<depth {
        #expect(mkdirat(fd, "d", 0o755) == 0)
        let next = openat(fd, "d", O_RDONLY | O_DIRECTORY)
        close(fd)
        fd = next
    }
    close(fd)
}

/// Removes a tree however deep (rm walks with openat).
func removeTree(_ path: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/rm")
    process.arguments = ["-rf", path]
    try? process.run()
    process.waitUntilExit()
}
