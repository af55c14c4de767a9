import Dispatch
import Foundation
import Logging
import Testing
import TestSupport
@testable import FuseKit

// Mount tests need /dev/fuse (and root or fusermount3). Under CI=true they always run, so a machine without FUSE
// fails loudly instead of skipping.
@Suite("FuseMount against a real kernel mount", .serialized,
       .enabled(if: FUSEMounts.device || FUSEMounts.required, "/dev/fuse is missing (mount tests always run under CI=true)"))
struct FuseMountTests {
    static func sampleFileSystem() -> MemoryFileSystem {
        let fs = MemoryFileSystem()
        fs.addFile("hello.txt", bytes: Array("hello world\n".utf8))
        let a = fs.addDirectory("a")
        let b = fs.addDirectory("b", in: a)
        let c = fs.addDirectory("c", in: b)
        fs.addFile("deep.txt", in: c, bytes: Array("deep\n".utf8))
        fs.addSymlink("link", target: "a/b/c/deep.txt")
        return fs
    }

    @Test("lookup, stat and listing of nested directories")
    func nestedDirectories() throws {
        try withTestMount(Self.sampleFileSystem()) { mounted throws in
            #expect(try listDirectory(mounted.directory).sorted() == [".", "..", "a", "hello.txt", "link"])
            #expect(try listDirectory(mounted.path("a/b")).sorted() == [".", "..", "c"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: mounted.path("a/b/c")) == ["deep.txt"])

            var info = stat()
            #expect(stat(mounted.path("a/b/c/deep.txt"), &info) == 0)
            #expect(info.st_mode == S_IFREG | 0o644)
            #expect(info.st_size == 5)
            #expect(info.st_mtim.tv_sec == 1_700_000_000)
            #expect(stat(mounted.path("a/b"), &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFDIR)
            #expect(try readWholeFile(mounted.path("hello.txt")) == Array("hello world\n".utf8))
        }
    }

    @Test("a directory of 5000 entries is listed completely, across several readdir pages")
    func largeDirectory() throws {
        let fs = MemoryFileSystem()
        let many = fs.addDirectory("many")
        let expected = (0..<5000).map { "entry-with-a-longish-name-\($0)" }
        for name in expected { fs.addFile(name, in: many, bytes: []) }
        try withTestMount(fs) { mounted throws in
            let names = try listDirectory(mounted.path("many"))
            #expect(names.count == 5002)
            #expect(Set(names) == Set(expected + [".", ".."]))
            // Twice: a second opendir takes a fresh snapshot.
            #expect(try FileManager.default.contentsOfDirectory(atPath: mounted.path("many")).count == 5000)
        }
    }

    @Test("a 20 MiB file reads the same through splice (.fileDescriptor) and through .bytes")
    func bigFileBothWays() throws {
        let size = 20 << 20
        let bytes = patternBytes(count: size, seed: 42)
        let fs = MemoryFileSystem()
        fs.addDescriptorFile("big-fd", fd: try descriptorWith(bytes), size: size)
        fs.addFile("big-bytes", bytes: bytes)
        try withTestMount(fs) { mounted throws in
            let clock = ContinuousClock()
            var viaDescriptor: [UInt8] = []
            let spliced = try clock.measure { viaDescriptor = try readWholeFile(mounted.path("big-fd")) }
            var viaBytes: [UInt8] = []
            let copied = try clock.measure { viaBytes = try readWholeFile(mounted.path("big-bytes")) }
            #expect(viaDescriptor.count == size)
            #expect(viaDescriptor == bytes)
            #expect(viaBytes == bytes)
            // Unaligned reads in the middle and across the end.
            #expect(try preadBytes(mounted.path("big-fd"), offset: 12_345, count: 300_001) == Array(bytes[12_345..<312_346]))
            #expect(try preadBytes(mounted.path("big-fd"), offset: size - 100, count: 4096) == Array(bytes[(size - 100)...]))
            // Second read: served from the page cache (keep_cache).
            let cached = try clock.measure { _ = try readWholeFile(mounted.path("big-fd")) }
            print("FuseKit 20 MiB read: splice \(spliced), bytes \(copied), page cache \(cached)")
        }
    }

    @Test("open may reply later from another thread without holding up other requests")
    func asynchronousOpen() throws {
        let fs = Self.sampleFileSystem()
        fs.addFile("slow.txt", bytes: Array("worth the wait\n".utf8), openDelaySeconds: 0.5)
        try withTestMount(fs) { mounted throws in
            let clock = ContinuousClock()
            let started = clock.now
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var slowResult: Result<[UInt8], any Error> = .success([])
            Thread {
                slowResult = Result { try readWholeFile(mounted.path("slow.txt")) }
                done.signal()
            }.start()
            usleep(100_000)
            // Meanwhile other requests are served.
            #expect(try readWholeFile(mounted.path("hello.txt")) == Array("hello world\n".utf8))
            #expect(clock.now - started < .milliseconds(450))
            #expect(done.wait(timeout: .now() + 10) == .success)
            #expect(clock.now - started >= .milliseconds(500))
            #expect(try slowResult.get() == Array("worth the wait\n".utf8))
            #expect(fs.openedOnThreads.count == 1)
        }
    }

    @Test("EIO thrown by read reaches the reader as an I/O error")
    func readError() throws {
        let fs = MemoryFileSystem()
        fs.addFailingFile("broken.txt", size: 100, error: .io)
        try withTestMount(fs) { mounted throws in
            #expect(throws: POSIXFailure(call: "read \(mounted.path("broken.txt"))", errno: EIO)) {
                _ = try readWholeFile(mounted.path("broken.txt"))
            }
        }
    }

    @Test("readlink, and reading through the link")
    func symlink() throws {
        try withTestMount(Self.sampleFileSystem()) { mounted throws in
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mounted.path("link")) == "a/b/c/deep.txt")
            var info = stat()
            #expect(lstat(mounted.path("link"), &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFLNK)
            #expect(try readWholeFile(mounted.path("link")) == Array("deep\n".utf8))
        }
    }

    @Test("errnos: ENOENT for a missing name, ENOTDIR below a file, EROFS from the write defaults")
    func errnoMapping() throws {
        try withTestMount(Self.sampleFileSystem()) { mounted throws in
            #expect(statErrno(mounted.path("missing")) == ENOENT)
            #expect(statErrno(mounted.path("a/b/missing")) == ENOENT)
            #expect(statErrno(mounted.path("hello.txt/x")) == ENOTDIR)
            #expect(mkdir(mounted.path("newdir"), 0o755) == -1 && errno == EROFS)
            #expect(open(mounted.path("new.txt"), O_CREAT | O_WRONLY, 0o644) == -1 && errno == EROFS)
            #expect(unlink(mounted.path("hello.txt")) == -1 && errno == EROFS)
            #expect(rename(mounted.path("hello.txt"), mounted.path("bye.txt")) == -1 && errno == EROFS)
            #expect(open(mounted.path("hello.txt"), O_WRONLY) == -1 && errno == EROFS)
        }
    }

    @Test("invalidateEntry makes a changed name visible despite long entry timeouts")
    func invalidation() throws {
        let fs = MemoryFileSystem()
        fs.addFile("switch", bytes: Array("one".utf8))
        try withTestMount(fs) { mounted throws in
            #expect(try readWholeFile(mounted.path("switch")) == Array("one".utf8))
            fs.replaceFile("switch", bytes: Array("two!".utf8))
            // The kernel still holds the old name → inode binding (timeout 3600 s).
            #expect(try readWholeFile(mounted.path("switch")) == Array("one".utf8))
            mounted.mount.invalidateEntry(parent: fuseRootInode, name: "switch")
            #expect(try readWholeFile(mounted.path("switch")) == Array("two!".utf8))
            // Harmless for names the kernel never saw.
            mounted.mount.invalidateEntry(parent: fuseRootInode, name: "never-looked-up")
            mounted.mount.invalidateInode(9999)
        }
    }

    @Test("exit() unmounts: the mount leaves /proc/mounts, run() returns 0, the /dev/fuse descriptor is closed")
    func cleanUnmount() throws {
        let mounted = try TestMount(Self.sampleFileSystem(), fsName: "host:7420,abc")
        defer { mounted.tearDown() }
        #expect(try readWholeFile(mounted.path("hello.txt")).count == 12)
        let line = try #require(TestMount.mountLine(mounted.directory))
        #expect(line.hasPrefix("host:7420,abc \(mounted.directory) fuse.fusekit-test "))
        let fd = mounted.mount.deviceFileDescriptor
        #expect(fd >= 0)
        #expect(descriptorTarget(fd) == "/dev/fuse")

        #expect(mounted.stop() == 0)
        #expect(!TestMount.isMounted(mounted.directory))
        #expect(descriptorTarget(fd) != "/dev/fuse")
        #expect(mounted.mount.deviceFileDescriptor == -1)
        #expect(statErrno(mounted.directory) == 0)  // the plain directory again
    }

    @Test("exit() also ends the loop while a file on the mount is open")
    func unmountWhileBusy() throws {
        let mounted = try TestMount(Self.sampleFileSystem())
        defer { mounted.tearDown() }
        let fd = open(mounted.path("hello.txt"), O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(mounted.stop() == 0)
        #expect(!TestMount.isMounted(mounted.directory))
        var byte: UInt8 = 0
        #expect(read(fd, &byte, 1) == -1)  // the connection is gone
    }

    @Test("an unmount from outside (fusermount3 -u) ends run()")
    func externalUnmount() throws {
        let mounted = try TestMount(Self.sampleFileSystem())
        defer { mounted.tearDown() }
        #expect(try readWholeFile(mounted.path("hello.txt")).count == 12)
        TestMount.forceUnmount(mounted.directory)
        #expect(!TestMount.isMounted(mounted.directory))
        #expect(mounted.waitForLoop(timeoutSeconds: 10) == 0)
    }

    @Test("exit() before run() makes run() return at once")
    func exitBeforeRun() throws {
        let directory = TemporaryDirectory("fusekit").path
        defer { rmdir(directory) }
        let mount = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: directory, fsName: "early",
                                  subtype: "fusekit-test", logger: .init(label: "fusekit.test"))
        #expect(TestMount.isMounted(mount.mountpoint))
        mount.exit()
        #expect(mount.run() == 0)
        #expect(!TestMount.isMounted(mount.mountpoint))
    }

    @Test("releasing a FuseMount that never ran unmounts it")
    func deinitUnmounts() throws {
        let directory = TemporaryDirectory("fusekit").path
        defer { rmdir(directory) }
        var mount: FuseMount? = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: directory, fsName: "x",
                                              subtype: "fusekit-test", logger: .init(label: "fusekit.test"))
        let path = mount!.mountpoint
        #expect(TestMount.isMounted(path))
        mount = nil
        #expect(!TestMount.isMounted(path))
    }

    @Test("clear errors for unusable mount points")
    func mountErrors() throws {
        let logger = Logger(label: "fusekit.test")
        let missing = "/tmp/fusekit-does-not-exist-\(UUID().uuidString)"
        let error = #expect(throws: FuseMountError.self) {
            _ = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: missing, fsName: "x", subtype: "t", logger: logger)
        }
        #expect(error?.errno == ENOENT)
        #expect(error?.message.contains("does not exist") == true)

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fusekit-file-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: file, contents: Data())
        defer { unlink(file) }
        let notDirectory = #expect(throws: FuseMountError.self) {
            _ = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: file, fsName: "x", subtype: "t", logger: logger)
        }
        #expect(notDirectory?.errno == ENOTDIR)

        let directory = TemporaryDirectory("fusekit").path
        defer { rmdir(directory) }
        let badOption = #expect(throws: FuseMountError.self) {
            _ = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: directory, fsName: "x", subtype: "t",
                              options: ["no_such_option"], logger: logger)
        }
        // libfuse's own reason is part of the message.
        #expect(badOption?.message.contains("no_such_option") == true)
        #expect(!TestMount.isMounted(directory))

        try withTestMount { mounted throws in
            let busy = #expect(throws: FuseMountError.self) {
                _ = try FuseMount(fileSystem: MemoryFileSystem(), mountpoint: mounted.directory, fsName: "x",
                                  subtype: "t", logger: logger)
            }
            #expect(busy?.message.contains("already a mount point") == true)
        }
    }
}

func descriptorTarget(_ fd: Int32) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")
}
