#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A fresh temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array((NSTemporaryDirectory() + "/upgradefs-node-test-XXXXXX").utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
