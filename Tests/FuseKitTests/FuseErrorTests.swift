import Foundation
import Testing
@testable import FuseKit

@Suite("FuseKit pieces that need no mount")
struct FuseKitUnitTests {
    @Test("FuseError keeps errnos and never replies 0 or a negative value")
    func errnoValues() {
        #expect(FuseError.noEntry.errno == ENOENT)
        #expect(FuseError.readOnly.errno == EROFS)
        #expect(FuseError.notEmpty.errno == ENOTEMPTY)
        #expect(FuseError(0).errno == EIO)
        #expect(FuseError(-ENOENT).errno == EIO)
        #expect(FuseError(EAGAIN) == .again)
    }

    @Test("mount options escape commas, so a HOST:PORT,ID source survives")
    func optionEscaping() {
        let options = FuseMount.optionString(fsName: "host:7420,abc", subtype: "upgradefs", extra: ["ro", ""])
        #expect(options.contains("fsname=host:7420\\,abc,subtype=upgradefs,ro"))
        #expect(options.hasPrefix("default_permissions,"))
        #expect(FuseMount.escapeOption("a\\b") == "a\\\\b")
    }

    @Test("mountinfo paths are unescaped")
    func mountinfoEscapes() {
        #expect(FuseMount.unescapeMountinfo("/tmp/with\\040space") == "/tmp/with space")
        #expect(FuseMount.unescapeMountinfo("/plain") == "/plain")
    }
}
