import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import UpgradeCore
import UpgradeFiles
import UpgradeWhiteboardClient

/// The node's TUF client: the I/O around `TrustedMetadataSet`, which makes
/// every trust decision. This type fetches (with length limits), hands the
/// bytes over for verification, and persists exactly what was accepted.
public actor TUFUpdater {
    /// Upper bounds on what the server may send (TUF's "endless data" defence).
    public struct Limits: Sendable {
        public var rootBytes = 512 * 1024
        public var timestampBytes = 16 * 1024
        public var snapshotBytes = 4 * 1024 * 1024
        public var targetsBytes = 64 * 1024 * 1024
        public var maxRootRotations = 256
        /// Seconds a metadata file may take to arrive, answer and body together (slow-retrieval defence: a
        /// server that drips a byte a second never trips a read timeout).
        public var metadataSeconds: Int64 = 20
        /// A target's download may take this many seconds plus its signed length at `minimumBytesPerSecond`.
        public var blobBaseSeconds: Int64 = 30
        public var minimumBytesPerSecond: Int64 = 32 * 1024
        public init() {}
    }

    public let source: MountSource
    let cache: NodeCache
    let http: HTTPClient
    let verifier: any Ed25519Verifying
    let limits: Limits
    let logger: Logger
    private(set) var trusted: TrustedMetadataSet
    /// Downloads and checks in flight, by content hash, so concurrent opens share one.
    private var inFlight: [String: Task<BlobIdentity, any Error>] = [:]
    /// Blobs whose bytes this process has hashed (downloaded or re-checked), with the identity their file had then.
    private var verifiedBlobs: [String: BlobIdentity] = [:]

    /// Establishes trust: from the cache if this node has mounted the server
    /// before, otherwise from the server's `1.root.json`, which must hash to
    /// the id in the mount source.
    public init(source: MountSource, cache: NodeCache, http: HTTPClient, verifier: any Ed25519Verifying,
                limits: Limits = Limits(), logger: Logger) async throws {
        self.source = source
        self.cache = cache
        self.http = http
        self.verifier = verifier
        self.limits = limits
        self.logger = logger

        let rootBytes: [UInt8]
        if let cached = cache.metadata("root") {
            rootBytes = cached
        } else {
            let initial: [UInt8]
            do {
                guard let fetched = try await Self.fetch(http, "\(source.baseURL)/metadata/1.root.json",
                                                         limit: limits.rootBytes,
                                                         seconds: limits.metadataSeconds) else {
                    throw MountError.unreachable(source: source.description,
                                                 reason: "\(source.endpoint) has no /metadata/1.root.json (not an upgradefs server?)")
                }
                initial = fetched
            } catch let error as MountError {
                throw error
            } catch {
                throw MountError.unreachable(source: source.description,
                                             reason: NetworkErrorText.describe(error, endpoint: source.endpoint))
            }
            let actual = ServerID.of(initialRoot: initial)
            guard actual == source.serverID else {
                throw MountError.identityMismatch(source: source.description, actualID: actual)
            }
            rootBytes = initial
        }
        do {
            trusted = try TrustedMetadataSet(trustedRoot: rootBytes, verifier: verifier, now: Date())
        } catch {
            throw MountError.verification("initial root: \(error)")
        }
        if cache.metadata("root") == nil { try cache.storeMetadata("root", rootBytes) }
        loadLocalMetadata()
    }

    /// Loads the last trusted timestamp, snapshot and targets as the baseline
    /// for rollback checks and as what the mount shows while the server is away.
    /// They were verified when fetched; here their signatures are checked again,
    /// expiry is not (they may have expired while the node was off).
    private func loadLocalMetadata() {
        // Expiry is judged against the distant past here, i.e. not at all.
        trusted.now = .distantPast
        defer { trusted.now = Date() }
        do {
            guard let timestamp = cache.metadata("timestamp") else { return }
            try trusted.updateTimestamp(timestamp, trusted: true)
            guard let snapshot = cache.metadata("snapshot") else { return }
            try trusted.updateSnapshot(snapshot, trusted: true)
            guard let targets = cache.metadata("targets") else { return }
            try trusted.updateTargets(targets)
        } catch {
            logger.warning("local metadata no longer verifies; starting from the trusted root", metadata: ["error": "\(error)"])
        }
    }

    public var targets: [String: TargetFile] { trusted.targets?.targets ?? [:] }
    /// The public key of the trusted root's (first) timestamp key: it also signs the whiteboard's answers.
    public var timestampKey: [UInt8]? {
        trusted.root.roles[.timestamp]?.keyIDs.first.flatMap { trusted.root.keys[$0]?.publicKey }
    }
    public var timestampVersion: Int { trusted.timestamp?.version ?? 0 }

    /// The trusted role that has expired first, if any has now: what the mount shows can no longer be
    /// confirmed current (the server, or someone in its place, offers nothing newer).
    public func expiredSince() -> (role: TUFRole, expires: Date)? {
        trusted.now = Date()
        return trusted.firstExpired()
    }

    /// Runs the TUF client workflow once. Returns true when new targets were accepted.
    @discardableResult
    public func refresh() async throws -> Bool {
        let base = "\(source.baseURL)/metadata"
        trusted.now = Date()
        // 1. Root rotation: follow N+1.root.json until the server has no newer one.
        for _ in 0..<limits.maxRootRotations {
            let next = trusted.root.version + 1
            guard let bytes = try await Self.fetch(http, "\(base)/\(next).root.json", limit: limits.rootBytes,
                                                    seconds: limits.metadataSeconds) else { break }
            try trusted.updateRoot(bytes)
            try cache.storeMetadata("root", bytes)
            logger.notice("trusted root rotated", metadata: ["tuf.root.version": "\(next)"])
        }
        try trusted.checkFinalRoot()
        if trusted.timestamp == nil { cache.removeMetadata("timestamp") }
        if trusted.snapshot == nil { cache.removeMetadata("snapshot") }

        // 2. Timestamp.
        guard let timestampBytes = try await Self.fetch(http, "\(base)/timestamp.json", limit: limits.timestampBytes,
                                                         seconds: limits.metadataSeconds) else {
            throw TUFFetchError.missing("timestamp.json")
        }
        guard try acceptTimestamp(timestampBytes) else { return false }

        // 3. Snapshot, at the version (and hash/length, if given) the timestamp names.
        let snapshotMeta = trusted.timestamp!.snapshot
        let snapshotLimit = snapshotMeta.length.map { Int($0) } ?? limits.snapshotBytes
        guard let snapshotBytes = try await Self.fetch(http, "\(base)/\(snapshotMeta.version).snapshot.json",
                                                       limit: snapshotLimit, seconds: limits.metadataSeconds) else {
            throw TUFFetchError.missing("\(snapshotMeta.version).snapshot.json")
        }
        try trusted.updateSnapshot(snapshotBytes)

        // 4. Targets, at the version the snapshot names.
        guard let targetsMeta = trusted.snapshot!.meta["targets.json"] else {
            throw MountError.verification("snapshot does not list targets.json")
        }
        let targetsLimit = targetsMeta.length.map { Int($0) } ?? limits.targetsBytes
        guard let targetsBytes = try await Self.fetch(http, "\(base)/\(targetsMeta.version).targets.json",
                                                      limit: targetsLimit, seconds: limits.metadataSeconds) else {
            throw TUFFetchError.missing("\(targetsMeta.version).targets.json")
        }
        try trusted.updateTargets(targetsBytes)
        // Stored only once all three verified, timestamp last: a refresh that fails half way must not leave a
        // timestamp on disk whose snapshot and targets are not there (after a restart with the server away,
        // the node would show nothing instead of what it verified before).
        try cache.storeMetadata("snapshot", snapshotBytes)
        try cache.storeMetadata("targets", targetsBytes)
        try cache.storeMetadata("timestamp", timestampBytes)
        return true
    }

    /// False when the server's timestamp is the one already trusted: nothing new.
    private func acceptTimestamp(_ bytes: [UInt8]) throws(TUFError) -> Bool {
        let result = Result { () throws(TUFError) in try trusted.updateTimestamp(bytes) }
        switch result {
        case .success: return true
        case .failure(.equalVersion): return false
        case .failure(let error): throw error
        }
    }

    /// Waits (long poll) until the server's timestamp version exceeds what this
    /// node trusts, or the server's wait runs out. False when the server has no
    /// change notification (`/v1/notify` answers 404: a plain static mirror).
    public func waitForChange() async throws -> Bool {
        let url = "\(source.baseURL)/v1/notify?after=\(timestampVersion)"
        return try await Self.fetch(http, url, limit: 64, seconds: 40) != nil
    }

    /// Opens the verified local copy of a target for reading, downloading and verifying it first if needed;
    /// returns the descriptor and the file's identity, which the caller checks before each read. No byte
    /// reaches the caller unverified: a cached file whose identity changed since it was hashed (written,
    /// replaced — by a crash, a tool or a user on the node) is hashed again, and fetched again if it is wrong.
    public func openVerifiedBlob(path: String, target: TargetFile) async throws -> (fd: Int32, identity: BlobIdentity) {
        let hash = target.sha256
        if let known = verifiedBlobs[hash] {
            if let opened = cache.openBlob(sha256: hash) {
                if opened.identity == known { return opened }
                close(opened.fd)
            }
            verifiedBlobs[hash] = nil
            logger.error("a cached file changed on disk after it was verified; checking it again",
                         metadata: ["target.path": "\(path)", "cache.file": "\(cache.blobPath(sha256: hash))"])
        }
        let identity = try await verify(path: path, target: target)
        guard let opened = cache.openBlob(sha256: hash) else {
            throw MountError.cache("\(cache.blobPath(sha256: hash)) vanished right after it was verified")
        }
        guard opened.identity == identity else {
            close(opened.fd)
            verifiedBlobs[hash] = nil
            throw MountError.cache("\(cache.blobPath(sha256: hash)) changed while it was being verified")
        }
        return opened
    }

    /// Makes sure the cache holds the target's verified bytes (one check or download per hash at a time).
    private func verify(path: String, target: TargetFile) async throws -> BlobIdentity {
        let hash = target.sha256
        if let running = inFlight[hash] { return try await running.value }
        let task = Task { try await self.obtain(path: path, target: target) }
        inFlight[hash] = task
        defer { inFlight[hash] = nil }
        let identity = try await task.value
        verifiedBlobs[hash] = identity
        return identity
    }

    private func obtain(path: String, target: TargetFile) async throws -> BlobIdentity {
        let cacheRef = cache
        let intact = await Task.detached { cacheRef.verifiedIdentity(sha256: target.sha256, length: target.length) }.value
        if let intact { return intact }
        return try await download(path: path, target: target)
    }

    /// Fetches a target into the cache, checking length and hash as it streams. The whole transfer is bounded
    /// in time (`blobBaseSeconds` plus the signed length at `minimumBytesPerSecond`): a read of a file not yet
    /// cached fails (EIO) instead of hanging on a server that drips.
    private func download(path: String, target: TargetFile) async throws -> BlobIdentity {
        let url = "\(source.baseURL)/targets/\(Self.consistentPath(path, sha256: target.sha256))"
        // At most 30 days: a signed length near Int64.max must not overflow the clock.
        let seconds = min(limits.blobBaseSeconds + target.length / max(1, limits.minimumBytesPerSecond), 30 * 86_400)
        let (http, cache, logger) = (self.http, self.cache, self.logger)
        return try await Self.within(seconds: seconds, url) {
            let response = try await http.execute(HTTPClientRequest(url: url), timeout: .seconds(seconds), logger: logger)
            guard response.status == .ok else {
                throw TUFFetchError.status(path, Int(response.status.code))
            }
            let (tmpPath, fd) = try cache.makeTemporaryFile()
            var keep = false
            defer {
                close(fd)
                if !keep { unlink(tmpPath) }
            }
            var verifier = TargetVerifier(expected: target, what: path)
            for try await buffer in response.body {
                try Task.checkCancellation()
                try buffer.withUnsafeReadableBytes { bytes in
                    try verifier.update(bytes)
                    try POSIXFiles.writeAll(fd, bytes, path: tmpPath)
                }
            }
            try Task.checkCancellation()
            try verifier.finish()
            let identity = try cache.install(temporary: tmpPath, fd: fd, sha256: target.sha256)
            keep = true
            return identity
        }
    }

    /// `2/payload/bin/app` → `2/payload/bin/<sha256>.app`, each component percent-encoded.
    static func consistentPath(_ path: String, sha256: String) -> String {
        var components = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        components[components.count - 1] = "\(sha256).\(components[components.count - 1])"
        return components.map { $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? $0 }
            .joined(separator: "/")
    }

    /// GET with a hard limit on the body and on the time the answer and its whole body may take; nil on 404.
    static func fetch(_ http: HTTPClient, _ url: String, limit: Int, seconds: Int64)
        async throws -> [UInt8]? {
        try await within(seconds: seconds, url) {
            let response = try await http.execute(HTTPClientRequest(url: url), timeout: .seconds(seconds))
            if response.status == .notFound { return nil }
            guard response.status == .ok else { throw TUFFetchError.status(url, Int(response.status.code)) }
            if let declared = response.headers.first(name: "content-length").flatMap(Int.init), declared > limit {
                throw TUFFetchError.tooLarge(url, limit)
            }
            do {
                let body = try await response.body.collect(upTo: limit)
                return Array(body.readableBytesView)
            } catch is NIOTooManyBytesError {
                throw TUFFetchError.tooLarge(url, limit)
            }
        }
    }

    /// Runs `body`, cancelling it (and throwing `.tooSlow`) once `seconds` have passed. The client's own
    /// deadline only covers the answer's head, and its read timeout only the gaps between bytes.
    static func within<T: Sendable>(seconds: Int64, _ what: String,
                                    _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask(operation: body)
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                throw TUFFetchError.tooSlow(what, seconds)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

public enum TUFFetchError: Error, CustomStringConvertible {
    case missing(String)
    case status(String, Int)
    case tooLarge(String, Int)
    case tooSlow(String, Int64)

    public var description: String {
        switch self {
        case .missing(let what): "the server does not have \(what)"
        case .status(let what, let code): "fetching \(what): HTTP status \(code)"
        case .tooLarge(let what, let limit): "\(what) is larger than the \(limit)-byte limit; refusing (endless-data defence)"
        case .tooSlow(let what, let seconds): "\(what) did not arrive within \(seconds) s; giving up (slow-retrieval defence)"
        }
    }
}
