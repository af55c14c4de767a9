#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeCore
import UpgradeFiles

/// What the manager reads of the mount, through plain files only: `latest`, `versions/N/upgrade.toml`,
/// `udb/upgrades/N/control`. Published bundles are immutable, so parsed manifests are kept.
public final class MountView: @unchecked Sendable {
    public let mount: String
    private var manifests: [Int64: UpgradeManifest] = [:]

    public init(mount: String) { self.mount = mount }

    public var udb: String { mount + "/udb" }
    public var selfDirectory: String { mount + "/self" }
    public func bundle(_ version: Int64) -> String { mount + "/versions/\(version)" }

    /// The newest published system version (0 when nothing is published yet).
    public func latest() throws(MountReadError) -> Int64 {
        let path = mount + "/latest"
        let text: String
        do {
            text = String(decoding: try POSIXFiles.readFile(path, limit: 4096), as: UTF8.self)
        } catch {
            if error.isNotFound { return 0 }
            throw MountReadError(path: path, problem: error.description)
        }
        guard let version = Int64(text.trimmingWhitespace()), version >= 0 else {
            throw MountReadError(path: path, problem: "does not hold a version number: \"\(text.trimmingWhitespace())\"")
        }
        return version
    }

    /// Why the directory is not an upgradefs mount with a whiteboard, or nil when it is: it must hold
    /// `latest` and `versions/` (the published upgrades) and `self/` (the node's whiteboard directory, shown
    /// when the mount has a node key).
    public func whiteboardProblem() -> String? {
        var st = stat()
        guard stat(mount + "/latest", &st) == 0, POSIXFiles.isRegular(st),
              stat(mount + "/versions", &st) == 0, POSIXFiles.isDirectory(st) else {
            return "\(mount) is not an upgradefs mount (no latest and versions/ in it): mount the server there first (upgradefs mount SOURCE \(mount) --node-key FILE)"
        }
        guard stat(selfDirectory, &st) == 0, POSIXFiles.isDirectory(st) else {
            return "\(mount) has no whiteboard (no self/ in it): the mount needs the node's key (upgradefs mount … --node-key FILE)"
        }
        return nil
    }

    /// The version numbers `versions/` lists (what the mount's signed metadata holds).
    public func publishedVersions() throws(MountReadError) -> Set<Int64> {
        let path = mount + "/versions"
        do {
            return Set(try POSIXFiles.listDirectory(path).compactMap { Int64($0) })
        } catch {
            throw MountReadError(path: path, problem: error.description)
        }
    }

    public func manifest(_ version: Int64) throws(MountReadError) -> UpgradeManifest {
        if let cached = manifests[version] { return cached }
        let path = bundle(version) + "/" + UpgradeManifest.fileName
        let manifest: UpgradeManifest
        do {
            let bytes = try POSIXFiles.readFile(path, limit: 1 << 20)
            manifest = try UpgradeManifest.parse(String(decoding: bytes, as: UTF8.self))
        } catch let error as FileError {
            throw MountReadError(path: path, problem: error.description)
        } catch {
            throw MountReadError(path: path, problem: "\(error)")
        }
        guard manifest.version == version else {
            throw MountReadError(path: path, problem: "names version \(manifest.version), not \(version)")
        }
        manifests[version] = manifest
        return manifest
    }

    /// The operator's word for upgrade N: `go` when the file (or its directory) is missing or empty.
    /// An unreadable file or a word the manager does not know counts as `pause`, the safe side.
    public func control(_ version: Int64) -> (word: ControlWord, raw: String, problem: String?) {
        let path = udb + "/upgrades/\(version)/control"
        do {
            let text = String(decoding: try POSIXFiles.readFile(path, limit: 4096), as: UTF8.self).trimmingWhitespace()
            guard let word = ControlWord.parse(text) else {
                return (.pause, text, "\(path): unknown control word \"\(text)\", treated as pause")
            }
            return (word, word.rawValue, nil)
        } catch {
            if error.isNotFound { return (.go, ControlWord.go.rawValue, nil) }
            return (.pause, ControlWord.pause.rawValue, "\(error); treated as pause")
        }
    }

    /// The bundle's SF, TF or check: the file the manifest names, else the default name if it exists.
    public func hook(_ named: String?, default name: String, in version: Int64) -> String? {
        if let named { return bundle(version) + "/" + named }
        let path = bundle(version) + "/" + name
        return POSIXFiles.exists(path) ? path : nil
    }
}

public struct MountReadError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }
    public var description: String { "\(path): \(problem)" }
}
