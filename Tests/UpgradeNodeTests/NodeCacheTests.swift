import Foundation
import NIOCore
import Testing
import UpgradeCore
@testable import UpgradeNode

/// The node's cache: bound to the server it was filled for, and never taking a file changed on disk for the
/// one it verified.
struct NodeCacheTests {
    static let idA = ServerID.of(initialRoot: Array("server A's initial root".utf8))
    static let idB = ServerID.of(initialRoot: Array("server B's initial root".utf8))

    @Test func cacheFilledFromServerAIsRefusedWhenTheSourceNamesServerB() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let url = URL(fileURLWithPath: dir.path)
        let filled = try NodeCache(directory: url, serverID: Self.idA)
        try filled.storeMetadata("root", Array("A's root".utf8))
        #expect(try String(contentsOfFile: dir.path + "/server-id", encoding: .utf8) == Self.idA + "\n")
        let error = #expect(throws: MountError.self) { try NodeCache(directory: url, serverID: Self.idB) }
        let message = "\(error!)"
        #expect(message.contains(Self.idA) && message.contains(Self.idB), "names both servers: \(message)")
        #expect(message.contains("/var/cache/upgradefs/\(Self.idB)"), "says how to fix it: \(message)")
        // The same server again is fine.
        _ = try NodeCache(directory: url, serverID: Self.idA)
    }

    @Test func cacheFromBeforeServerIDsWereRecordedIsKeptOnlyForTheServerItsRootNames() {
        let rootA = Array("server A's initial root".utf8)
        #expect(NodeCache.binding(marker: nil, cachedRoot: nil, serverID: Self.idA) == .fresh)
        #expect(NodeCache.binding(marker: nil, cachedRoot: rootA, serverID: Self.idA) == .adopt)
        #expect(NodeCache.binding(marker: nil, cachedRoot: rootA, serverID: Self.idB) == .unknownServer)
        #expect(NodeCache.binding(marker: nil, cachedRoot: Array("a rotated root".utf8), serverID: Self.idA) == .unknownServer)
        #expect(NodeCache.binding(marker: Self.idA + "\n", cachedRoot: nil, serverID: Self.idA) == .bound)
        #expect(NodeCache.binding(marker: Self.idA + "\n", cachedRoot: rootA, serverID: Self.idB) == .otherServer(Self.idA))
    }

    @Test func cachedFileAlteredAfterVerificationIsNotTakenForTheVerifiedOne() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let cache = try NodeCache(directory: URL(fileURLWithPath: dir.path), serverID: Self.idA)
        let good = Array("verified bytes\n".utf8)
        let target = TargetFile(describing: good)
        let path = cache.blobPath(sha256: target.sha256)
        try Data(good).write(to: URL(fileURLWithPath: path))
        let verified = try #require(cache.verifiedIdentity(sha256: target.sha256, length: target.length))
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o444, "cached content is read-only")
        let opened = try #require(cache.openBlob(sha256: target.sha256))
        #expect(opened.identity == verified)
        close(opened.fd)

        // Root alters the file in place, same length, and puts its modification time back.
        let fd = open(path, O_WRONLY)
        #expect(pwrite(fd, "X", 1, 0) == 1)
        var times = [timespec(tv_sec: st.st_mtim.tv_sec, tv_nsec: st.st_mtim.tv_nsec),
                     timespec(tv_sec: st.st_mtim.tv_sec, tv_nsec: st.st_mtim.tv_nsec)]
        #expect(futimens(fd, &times) == 0)
        close(fd)
        let reopened = try #require(cache.openBlob(sha256: target.sha256))
        defer { close(reopened.fd) }
        #expect(reopened.identity != verified, "the change time gives it away")
        #expect(cache.verifiedIdentity(sha256: target.sha256, length: target.length) == nil)
    }
}

struct RefreshPacingTests {
    @Test func staticMirrorWithoutNotifyIsPolledEveryTenSecondsNotInALoop() {
        var pacing = RefreshPacing()
        for _ in 0..<3 {
            #expect(pacing.next(after: .nothingNewWithoutNotification, cycle: .milliseconds(3)) == .seconds(10))
        }
    }

    @Test func failingServerIsRetriedWithExponentialBackOffUpToThirtySeconds() {
        var pacing = RefreshPacing()
        let delays = (0..<10).map { _ in pacing.next(after: .failed, cycle: .milliseconds(1)) }
        #expect(delays.prefix(4) == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2)])
        #expect(delays.last == .seconds(30))
        #expect(pacing.next(after: .newMetadata, cycle: .seconds(1)) == .zero)
        #expect(pacing.next(after: .failed, cycle: .milliseconds(1)) == .milliseconds(250), "a success resets the back-off")
    }

    @Test func notifyAnsweringAtOnceWithNothingNewCannotMakeTheMountLoop() {
        var pacing = RefreshPacing()
        #expect(pacing.next(after: .nothingNew, cycle: .milliseconds(100)) == .milliseconds(900))
        #expect(pacing.next(after: .nothingNew, cycle: .seconds(25)) == .zero, "a long poll that ran out goes on at once")
    }
}
