#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A fresh temporary directory (`$TMPDIR/upgradefs-LABEL-XXXXXX`), removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "test") {
        let temporary = NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory()
        var template = Array((temporary + "/upgradefs-\(label)-XXXXXX").utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    public var url: URL { URL(fileURLWithPath: path) }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
