#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeCore
import UpgradeFiles
import UpgradeManager

/// Reads what the layer routes by from the mount, through plain files as the manager does
/// (docs/DESIGN.md, "Upgrade layer"): `self/version` and `self/state` (the manager's reports), `latest`, and the
/// class of each published version (`versions/N/upgrade.toml`, parsed once by `MountView`: published bundles are
/// immutable).
public final class LayerViewReader: @unchecked Sendable {
    public let mount: MountView
    public let className: String

    public init(mount: String, className: String) {
        self.mount = MountView(mount: mount)
        self.className = className
    }

    /// The node's view now; an error names the file that could not be read (the caller keeps its last view).
    /// Called from one task at a time.
    public func read() throws(MountReadError) -> LayerView {
        let nodeVersion = try number(mount.selfDirectory + "/version")
        let state = try word(mount.selfDirectory + "/state")
        let latest = try mount.latest()
        var classVersions: [Int64] = []
        for version in try mount.publishedVersions().sorted() where version <= latest {
            if try mount.manifest(version).class == className { classVersions.append(version) }
        }
        return LayerView(nodeVersion: nodeVersion, latest: latest, classVersions: classVersions,
                         upgrading: state == NodeState.upgrading.rawValue)
    }

    /// The SOs the bundles of `classVersions` ship (`versions/N/so/past`, `versions/N/so/future`, executable),
    /// each with its executable's path (`SimulationObjectPlan`).
    public func shippedSimulationObjects(classVersions: [Int64]) -> [SimulationObject: String] {
        var shipped: [SimulationObject: String] = [:]
        for version in classVersions {
            for kind in [SimulationObject.Kind.past, .future] {
                let path = mount.bundle(version) + "/" + SimulationObjectPlan.path(kind)
                guard access(path, X_OK) == 0,
                      let so = SimulationObjectPlan.simulationObject(kind, shippedIn: version, classVersions: classVersions)
                else { continue }
                shipped[so] = path
            }
        }
        return shipped
    }

    /// A file holding one word; missing = empty (the manager has not reported yet).
    private func word(_ path: String) throws(MountReadError) -> String {
        do {
            return String(decoding: try POSIXFiles.readFile(path, limit: 4096), as: UTF8.self).trimmingWhitespace()
        } catch {
            if error.isNotFound { return "" }
            throw MountReadError(path: path, problem: error.description)
        }
    }

    /// A version number; missing or empty = 0 (unlike `MountView.latest()`, which refuses an empty file: the
    /// manager's report may be caught between its truncation and its write).
    private func number(_ path: String) throws(MountReadError) -> Int64 {
        let text = try word(path)
        if text.isEmpty { return 0 }
        guard let value = Int64(text), value >= 0 else {
            throw MountReadError(path: path, problem: "does not hold a version number: \"\(text)\"")
        }
        return value
    }
}
