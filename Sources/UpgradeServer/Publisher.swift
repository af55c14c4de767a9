#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import Logging
import UpgradeCore
import UpgradeFiles

/// What one look at one bundle came to.
public enum BundleOutcome: Sendable, Equatable {
    case published(bundle: String, version: Int64)
    case rejected(bundle: String, reason: String)
    /// Not settled yet, or changed while it was being copied: looked at again later.
    case waiting(bundle: String)
}

/// Owns the repository: takes settled bundles from the publish directory,
/// checks them, copies their content into the store, and signs and writes new
/// metadata. Every change to the repository goes through this one actor, which
/// runs on a thread of its own (its file-system work blocks).
public actor Publisher {
    public nonisolated let configuration: ServerConfiguration
    public nonisolated let serverID: String
    let keys: ServerKeyFile
    let logger: Logger
    let store: ContentStore
    let expiry: ExpiryPolicy
    nonisolated let notifier: VersionNotifier
    nonisolated let metadataDirectory: String

    private var repository: Repository
    private var pending: [String: PendingBundle] = [:]
    /// The last error a bundle's scan failed with, so a lasting one is logged once, not every scan.
    private var scanErrors: [String: String] = [:]
    /// Fault injection for tests: runs after the bundle directory is opened for the copy, before any file is copied.
    private var testHookBeforeCopy: (@Sendable (String) -> Void)?

    func setTestHookBeforeCopy(_ hook: (@Sendable (String) -> Void)?) { testHookBeforeCopy = hook }
    private let executor = ThreadExecutor(name: "upgradefs-publisher")

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private struct PendingBundle {
        var signature: TreeSignature
        var unchangedSince: ContinuousClock.Instant
    }

    public static let publishedSuffix = ".published"
    public static let rejectedSuffix = ".rejected"

    /// Opens (or creates) the state directory for this key file's server.
    public init(configuration: ServerConfiguration, keys: ServerKeyFile, logger: Logger) throws {
        self.configuration = configuration
        self.keys = keys
        self.logger = logger
        self.serverID = keys.serverID
        self.expiry = ExpiryPolicy(timestampSeconds: configuration.timestampExpirySeconds)
        self.store = ContentStore(stateDirectory: configuration.stateDirectory)
        try POSIXFiles.makeDirectories(configuration.stateDirectory, mode: 0o755)
        try POSIXFiles.makeDirectories(store.blobsDirectory)
        try POSIXFiles.makeDirectories(store.temporaryDirectory, mode: 0o700)
        try POSIXFiles.makeDirectories(configuration.publishDirectory)
        store.cleanTemporaryFiles()
        let (repository, created) = try Repository.open(
            stateDirectory: configuration.stateDirectory, keys: keys, expiry: expiry, now: Date())
        self.repository = repository
        self.metadataDirectory = repository.metadataDirectory
        self.notifier = VersionNotifier(current: repository.timestamp.version)
        if created {
            logger.info("created a new repository", metadata: ["state.dir": .string(configuration.stateDirectory), "server.id": .string(keys.serverID)])
        }
    }

    /// The newest published bundle version (0 when none).
    public var latestVersion: Int64 { repository.latestBundleVersion }
    /// Bundles published and rejected since the server started (for `/metrics`).
    public private(set) var outcomeCounts = (published: 0, rejected: 0)
    public var timestampVersion: Int { repository.timestamp.version }
    public var targets: TargetsMetadata { repository.targets }

    // MARK: - Scanning

    /// Looks at every unprocessed bundle in the publish directory once:
    /// records its tree, and publishes or rejects those whose tree has not
    /// changed for the settle time.
    @discardableResult
    public func scanOnce() -> [BundleOutcome] {
        let publishDirectory = configuration.publishDirectory
        let names: [String]
        do {
            names = try POSIXFiles.listDirectory(publishDirectory).sorted()
        } catch {
            logger.error("cannot read the publish directory", metadata: ["publish.dir": .string(publishDirectory), "error": .string("\(error)")])
            return []
        }
        let present = Set(names)
        pending = pending.filter { present.contains($0.key) }
        scanErrors = scanErrors.filter { present.contains($0.key) }

        var outcomes: [BundleOutcome] = []
        for name in names where !name.hasPrefix(".") {
            let path = publishDirectory + "/" + name
            guard let st = try? POSIXFiles.lstatOrNil(path), POSIXFiles.isDirectory(st) else { continue }
            if present.contains(name + Self.publishedSuffix) || present.contains(name + Self.rejectedSuffix) {
                pending[name] = nil
                continue
            }
            if let outcome = look(at: name, path: path) {
                outcomes.append(outcome)
                switch outcome {
                case .published: outcomeCounts.published += 1
                case .rejected: outcomeCounts.rejected += 1
                case .waiting: break
                }
            }
        }
        return outcomes
    }

    private func look(at name: String, path: String) -> BundleOutcome? {
        let scanned: ScannedBundle
        do {
            scanned = try BundleScanner.scan(path, limits: configuration.limits)
            scanErrors[name] = nil
        } catch {
            // Only errors a later scan may not meet are thrown (the tree changing under the walk, too few
            // descriptors or too little memory); anything else is a problem of the bundle and rejects it.
            if scanErrors.updateValue(error.description, forKey: name) != error.description {
                logger.warning("cannot scan bundle yet; will look again", metadata: ["bundle": .string(name), "error": .string("\(error)")])
            }
            pending[name] = nil
            return .waiting(bundle: name)
        }
        let now = ContinuousClock.now
        if pending[name]?.signature != scanned.signature {
            if pending[name] == nil {
                logger.info("new bundle, waiting for it to settle", metadata: ["bundle": .string(name)])
            }
            pending[name] = PendingBundle(signature: scanned.signature, unchangedSince: now)
        }
        guard now - pending[name]!.unchangedSince >= .milliseconds(configuration.settleMilliseconds) else {
            return .waiting(bundle: name)
        }
        return process(name: name, path: path, scanned: scanned)
    }

    private func process(name: String, path: String, scanned: ScannedBundle) -> BundleOutcome {
        let manifestText: String?
        switch scanned.manifestText() {
        case .failure(let rejection): return reject(name, rejection)
        case .success(let text): manifestText = text
        }

        // Published before, but the marker was not written (crash in between)?
        if let text = manifestText, let manifest = try? UpgradeManifest.parse(text),
           manifest.version <= repository.latestBundleVersion, isPublished(scanned, name: name, version: manifest.version)
        {
            logger.info("bundle was already published; writing its marker", metadata: ["bundle": .string(name)])
            writeMarker(name, suffix: Self.publishedSuffix, text: "version \(manifest.version)\n")
            pending[name] = nil
            return .published(bundle: name, version: manifest.version)
        }

        let bundle: ValidatedBundle
        switch scanned.validate(latestVersion: repository.latestBundleVersion, limits: configuration.limits) {
        case .failure(let rejection): return reject(name, rejection)
        case .success(let validated): bundle = validated
        }

        // Copy everything into the store, hashing as we go.
        let version = bundle.manifest.version
        var newTargets: [String: TargetFile] = [:]
        var changedDirectories: Set<String> = []
        do throws(FileError) {
            // Every file is opened beneath the bundle directory the scan saw, one component at a time
            // without following links, and must be the very file the scan saw (device and inode): a
            // directory or file swapped in between the scan and the copy fails the copy.
            let root = try POSIXFiles.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            defer { close(root) }
            var rootStat = stat()
            guard fstat(root, &rootStat) == 0, FileIdentity(rootStat) == scanned.root else {
                throw FileError("open (the bundle directory changed while publishing)", path, errno: EAGAIN)
            }
            testHookBeforeCopy?(path)
            for file in bundle.files {
                let filePath = path + "/" + file.path
                guard let identity = scanned.identity(of: file.path) else {
                    throw FileError("copy (file changed while publishing)", filePath, errno: EAGAIN)
                }
                let source = try POSIXFiles.openBeneath(root, file.path, O_RDONLY | O_NONBLOCK, displayPath: filePath)
                defer { close(source) }
                let ingested = try store.ingest(source, path: filePath, expected: identity, expectedSize: file.size)
                if let directory = ingested.changedDirectory { changedDirectories.insert(directory) }
                var custom: [String: JSONValue] = ["mode": .int(Int64(file.mode))]
                if file.path == UpgradeManifest.fileName {
                    custom["manifest"] = manifestJSON(bundle)
                    custom["bundle"] = .string(name)
                }
                newTargets["\(version)/\(file.path)"] = TargetFile(
                    length: ingested.length, sha256: ingested.sha256, custom: .object(["upgradefs": .object(custom)]))
            }
            for link in bundle.symlinks {
                let ingested = try store.ingest(bytes: Array(link.target.utf8))
                if let directory = ingested.changedDirectory { changedDirectories.insert(directory) }
                newTargets["\(version)/\(link.path)"] = TargetFile(
                    length: ingested.length, sha256: ingested.sha256,
                    custom: .object(["upgradefs": .object(["mode": .int(0o777), "symlink": .bool(true), "target": .string(link.target)])]))
            }
        } catch {
            if error.path == path || error.path.hasPrefix(path + "/") {
                // The bundle changed under us (or a file cannot be read): wait for it to settle again.
                logger.info("bundle changed while being copied; waiting for it to settle", metadata: ["bundle": .string(name), "error": .string("\(error)")])
            } else {
                logger.error("cannot copy bundle into the content store", metadata: ["bundle": .string(name), "error": .string("\(error)")])
            }
            pending[name] = nil
            return .waiting(bundle: name)
        }

        // The tree must be exactly what was checked and copied.
        let after = try? BundleScanner.scan(path, limits: configuration.limits).signature
        guard after == scanned.signature else {
            logger.info("bundle changed while being copied; waiting for it to settle", metadata: ["bundle": .string(name)])
            pending[name] = nil
            return .waiting(bundle: name)
        }

        do {
            for directory in changedDirectories.sorted() { try POSIXFiles.fsyncPath(directory, directory: true) }
            if !changedDirectories.isEmpty { try POSIXFiles.fsyncPath(store.blobsDirectory, directory: true) }
            var targets = repository.targets.targets
            targets.merge(newTargets) { _, new in new }
            try repository.publish(targets: targets, expiry: expiry, now: Date())
        } catch {
            logger.error("cannot write metadata; will retry", metadata: ["bundle": .string(name), "error": .string("\(error)")])
            pending[name] = nil
            return .waiting(bundle: name)
        }
        notifier.publish(repository.timestamp.version)
        pending[name] = nil

        var marker = "version \(version)\nclass \(bundle.manifest.class)\nfiles \(bundle.files.count)\nsymlinks \(bundle.symlinks.count)\nbytes \(bundle.totalBytes)\n"
        marker += "targets \(repository.targets.version)\nsnapshot \(repository.snapshot.version)\ntimestamp \(repository.timestamp.version)\n"
        for path in bundle.droppedSpecialBits {
            marker += "dropped set-uid/set-gid/sticky bits: \(BundlePath.printable(path))\n"
        }
        writeMarker(name, suffix: Self.publishedSuffix, text: marker)
        logger.info(
            "published bundle",
            metadata: [
                "bundle": .string(name), "upgrade.version": .stringConvertible(version),
                "upgrade.class": .string(bundle.manifest.class), "bundle.files": .stringConvertible(bundle.files.count),
                "tuf.timestamp.version": .stringConvertible(repository.timestamp.version),
            ])
        if !bundle.droppedSpecialBits.isEmpty {
            logger.notice("dropped set-uid/set-gid/sticky bits", metadata: ["bundle": .string(name), "paths": .stringConvertible(bundle.droppedSpecialBits)])
        }
        return .published(bundle: name, version: version)
    }

    private func manifestJSON(_ bundle: ValidatedBundle) -> JSONValue {
        let m = bundle.manifest
        func optional(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
        return .object([
            "class": .string(m.class),
            "version": .int(m.version),
            "from_version": m.fromVersion.map { .int($0) } ?? .null,
            "description": optional(m.description),
            "payload": .string(m.payload),
            "sf": optional(bundle.sf),
            "tf": optional(bundle.tf),
            "check": optional(bundle.check),
        ])
    }

    /// Whether the published version `version` came from this bundle: same
    /// bundle name (recorded in the manifest target), manifest hash, paths and lengths.
    private func isPublished(_ scanned: ScannedBundle, name: String, version: Int64) -> Bool {
        guard let manifestBytes = scanned.manifestBytes,
              let published = repository.targets.targets["\(version)/\(UpgradeManifest.fileName)"],
              published.custom?["upgradefs"]?["bundle"]?.stringValue == name,
              published.sha256 == Hex.encode(SHA256.hash(data: manifestBytes))
        else { return false }
        let prefix = "\(version)/"
        var publishedPaths: [String: Int64] = [:]
        for (path, target) in repository.targets.targets where path.hasPrefix(prefix) {
            publishedPaths[String(path.dropFirst(prefix.count))] = target.length
        }
        var bundlePaths: [String: Int64] = [:]
        for entry in scanned.entries {
            switch entry.kind {
            case .file(let size, _): bundlePaths[entry.path] = size
            case .symlink(let target): bundlePaths[entry.path] = Int64(target.utf8.count)
            default: break
            }
        }
        return publishedPaths == bundlePaths
    }

    private func reject(_ name: String, _ rejection: BundleRejection) -> BundleOutcome {
        let reason = rejection.description
        logger.warning("rejected bundle", metadata: ["bundle": .string(name), "reason": .string(reason)])
        writeMarker(name, suffix: Self.rejectedSuffix, text: reason + "\n")
        pending[name] = nil
        return .rejected(bundle: name, reason: reason)
    }

    private func writeMarker(_ name: String, suffix: String, text: String) {
        let path = configuration.publishDirectory + "/" + name + suffix
        do {
            try POSIXFiles.writeAtomically(Array(text.utf8), to: path)
        } catch {
            logger.error("cannot write marker", metadata: ["marker": .string(path), "error": .string("\(error)")])
        }
    }

    // MARK: - Expiry

    /// Re-signs metadata that is near its expiry (timestamp and snapshot when
    /// half their lifetime is gone, targets likewise, root when under 30 days
    /// remain). Returns the roles re-signed.
    @discardableResult
    public func refreshIfNeeded(now: Date = Date()) -> [TUFRole] {
        do {
            let renewed = try repository.refresh(expiry: expiry, now: now)
            if !renewed.isEmpty {
                notifier.publish(repository.timestamp.version)
                logger.debug(
                    "re-signed metadata",
                    metadata: ["roles": .string(renewed.map(\.rawValue).joined(separator: ",")), "tuf.timestamp.version": .stringConvertible(repository.timestamp.version)])
            }
            return renewed
        } catch {
            logger.error("cannot re-sign metadata", metadata: ["error": .string("\(error)")])
            return []
        }
    }

    /// Scans and refreshes every `scanIntervalMilliseconds` until the task is cancelled.
    public func run() async {
        while !Task.isCancelled {
            scanOnce()
            refreshIfNeeded()
            try? await Task.sleep(for: .milliseconds(configuration.scanIntervalMilliseconds))
        }
    }
}
