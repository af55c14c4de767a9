import Foundation
import NIOCore
import Testing
import UpgradeCore
import UpgradeWhiteboardClient

struct NetworkErrorTextTests {
    @Test func refusedConnectionReadsAsCannotReachHostPortWithoutLibraryInternals() {
        let error = IOError(errnoCode: ECONNREFUSED, reason: "connection reset (error set)")
        #expect(NetworkErrorText.describe(error, endpoint: "127.0.0.1:7420") == "cannot reach 127.0.0.1:7420: connection refused")
        #expect(NetworkErrorText.describe(TUFError.hashMismatch(what: "x"), endpoint: "h:1") == "\(TUFError.hashMismatch(what: "x"))")
    }
}
