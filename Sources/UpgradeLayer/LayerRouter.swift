import UpgradeCore

/// The upgrade layer's decisions, pure: which object answers a call, and what the layer answers itself when none
/// can (docs/DESIGN.md, "Upgrade layer"; the status and body are docs/REFERENCE.md, "The upgrade layer").
///
/// Versions are system versions (`latest`, `self/version`). A caller's version names the software of this
/// node's class that it expects: the newest version published *for this class* at or below it. So a peer at
/// system version 7 calls a `counter` node whose class last changed at 5 as a version-5 caller.
public enum LayerRouter {
    /// Where a call goes, for the caller's `Upgradefs-Version` header values (none: the header is absent).
    public static func route(versionHeader values: [String], view: LayerView) -> LayerRoute {
        let installed = view.installedVersion
        guard installed > 0 else { return .refuse(.notInstalled(view)) }
        let caller: Int64
        switch values.count {
        case 0:
            return .application
        case 1:
            guard let parsed = parseVersion(values[0]) else { return .refuse(.badHeader(values, view)) }
            caller = parsed
        default:
            return .refuse(.badHeader(values, view))
        }
        guard caller <= view.latest else { return .refuse(.unknownVersion(caller, view)) }
        let callerClass = view.classVersion(atOrBelow: caller)
        guard callerClass > 0 else { return .refuse(.beforeClass(caller, view)) }
        if callerClass == installed { return .application }
        if view.retired.contains(callerClass) { return .refuse(.retired(caller, callerClass, view)) }
        // Every SO of the chain between the caller's version and the installed one must be there.
        let chain = self.chain(serving: callerClass, view: view)
        for so in chain where !view.simulationObjects.contains(so) {
            return .refuse(.noSimulationObject(caller, so, view))
        }
        return .simulationObject(SimulationObject(callerClass > installed ? .future : .past, callerClass))
    }

    /// The SOs a call of class version `callerClass` passes through, by ascending version: the future SOs of every
    /// class version above the installed one up to `callerClass`, or the past SOs of every class version from
    /// `callerClass` up to (not including) the installed one. Empty for the installed version.
    public static func chain(serving callerClass: Int64, view: LayerView) -> [SimulationObject] {
        let installed = view.installedVersion
        if callerClass > installed {
            return view.classVersions.filter { $0 > installed && $0 <= callerClass }.map { SimulationObject(.future, $0) }
        }
        return view.classVersions.filter { $0 >= callerClass && $0 < installed }.map { SimulationObject(.past, $0) }
    }

    /// What `so` forwards the calls it cannot answer alone to: the next SO of its chain toward the installed
    /// version, or the application. Nil when `so` does not belong to the node's chains (its version is not a
    /// class version on the right side of the installed one).
    public static func delegate(of so: SimulationObject, view: LayerView) -> LayerTarget? {
        let installed = view.installedVersion
        guard view.classVersions.contains(so.version) else { return nil }
        switch so.kind {
        case .future:
            guard so.version > installed else { return nil }
            let previous = view.classVersions.last { $0 < so.version } ?? 0
            return previous > installed ? .simulationObject(SimulationObject(.future, previous)) : .application
        case .past:
            guard so.version < installed else { return nil }
            let next = view.classVersions.first { $0 > so.version } ?? installed
            return next < installed ? .simulationObject(SimulationObject(.past, next)) : .application
        }
    }

    /// A version header's value: a decimal number 0 ≤ N < 2^63, no sign, no spaces inside, no leading zeros.
    public static func parseVersion(_ text: String) -> Int64? {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty, trimmed.utf8.count <= 19, trimmed.utf8.allSatisfy({ (48...57).contains($0) }),
              trimmed == "0" || trimmed.utf8.first != 48 else { return nil }
        return Int64(trimmed)
    }
}

/// What the layer knows of its node when it routes a call, read from the mount (`LayerViewReader`).
public struct LayerView: Sendable, Equatable {
    /// The system version the node is at (`self/version`; 0 = nothing applied yet).
    public var nodeVersion: Int64
    /// The newest system version the mount shows (`latest`).
    public var latest: Int64
    /// The versions published for the node's class (`versions/N/upgrade.toml` with its class), ascending.
    public var classVersions: [Int64]
    /// The node is upgrading (`self/state`): the application may be down until the new one has started.
    public var upgrading: Bool
    /// The simulation objects that run on this node and answer calls.
    public var simulationObjects: Set<SimulationObject>
    /// Class versions whose calls are no longer served (retired by the operator).
    public var retired: Set<Int64>

    public init(nodeVersion: Int64, latest: Int64, classVersions: [Int64], upgrading: Bool = false,
                simulationObjects: Set<SimulationObject> = [], retired: Set<Int64> = []) {
        self.nodeVersion = nodeVersion
        self.latest = max(latest, nodeVersion)
        self.classVersions = classVersions.sorted()
        self.upgrading = upgrading
        self.simulationObjects = simulationObjects
        self.retired = retired
    }

    /// The newest class version at or below `version` (0: none).
    public func classVersion(atOrBelow version: Int64) -> Int64 {
        classVersions.last { $0 <= version } ?? 0
    }

    /// The class version the node runs: the newest at or below its node version (0 = none installed).
    public var installedVersion: Int64 { classVersion(atOrBelow: nodeVersion) }
}

/// A simulation object: a past SO of version V answers version-V calls on a node that runs a newer version;
/// a future SO of V answers them on a node that runs an older one.
public struct SimulationObject: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable { case past, future }
    public var kind: Kind
    public var version: Int64

    public init(_ kind: Kind, _ version: Int64) {
        self.kind = kind
        self.version = version
    }

    public var description: String { "\(kind.rawValue) SO of version \(version)" }
}

public enum LayerTarget: Sendable, Equatable {
    case application
    case simulationObject(SimulationObject)
}

public enum LayerRoute: Sendable, Equatable {
    case application
    case simulationObject(SimulationObject)
    /// The layer answers itself, at once.
    case refuse(LayerRefusal)
}

/// An answer the layer gives itself: status, the `Upgradefs-Error` code, a message for people, and (when a
/// retry may succeed) `Retry-After`. The body is `json` (docs/REFERENCE.md, "The upgrade layer").
public struct LayerRefusal: Sendable, Equatable {
    /// The `error` field and the `Upgradefs-Error` header: stable words scripts may match.
    public enum Code: String, Sendable, CaseIterable {
        case badVersionHeader = "bad-version-header"
        case unknownVersion = "unknown-version"
        case beforeClass = "version-before-class"
        case noSimulationObject = "no-simulation-object"
        case retired = "version-retired"
        case notInstalled = "not-installed"
        case upgrading = "upgrading"
        case applicationUnavailable = "application-unavailable"
        case applicationTimeout = "application-timeout"
        case simulationObjectUnavailable = "simulation-object-unavailable"
        case badRequest = "bad-request"
    }

    /// The disallow rule's status: 421 Misdirected Request (docs/DESIGN.md, "Upgrade layer", why).
    public static let disallowedStatus = 421

    public var code: Code
    public var status: Int
    public var message: String
    /// The caller's version when the header held one.
    public var callerVersion: Int64?
    /// The node's system version.
    public var nodeVersion: Int64
    public var retryAfterSeconds: Int?

    public init(code: Code, status: Int, message: String, callerVersion: Int64? = nil, nodeVersion: Int64,
                retryAfterSeconds: Int? = nil) {
        self.code = code
        self.status = status
        self.message = message
        self.callerVersion = callerVersion
        self.nodeVersion = nodeVersion
        self.retryAfterSeconds = retryAfterSeconds
    }

    static func badHeader(_ values: [String], _ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .badVersionHeader, status: 400,
                     message: "\(LayerHeader.version) must appear at most once and hold a version number, got \(values.map { "\"\($0)\"" }.joined(separator: ", "))",
                     nodeVersion: view.nodeVersion)
    }

    static func unknownVersion(_ caller: Int64, _ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .unknownVersion, status: disallowedStatus,
                     message: "version \(caller) is newer than any this node knows (latest \(view.latest))",
                     callerVersion: caller, nodeVersion: view.nodeVersion, retryAfterSeconds: 1)
    }

    static func beforeClass(_ caller: Int64, _ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .beforeClass, status: disallowedStatus,
                     message: "version \(caller) predates every version of this node's class",
                     callerVersion: caller, nodeVersion: view.nodeVersion)
    }

    static func retired(_ caller: Int64, _ classVersion: Int64, _ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .retired, status: disallowedStatus,
                     message: "version \(classVersion) of this node's class is retired",
                     callerVersion: caller, nodeVersion: view.nodeVersion)
    }

    static func noSimulationObject(_ caller: Int64, _ missing: SimulationObject, _ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .noSimulationObject, status: disallowedStatus,
                     message: "this node runs version \(view.installedVersion) and has no \(missing) to serve version \(caller)",
                     callerVersion: caller, nodeVersion: view.nodeVersion,
                     retryAfterSeconds: missing.kind == .future ? 1 : nil)
    }

    static func notInstalled(_ view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .notInstalled, status: 503, message: "no version of the application is installed on this node yet",
                     nodeVersion: view.nodeVersion, retryAfterSeconds: 1)
    }

    /// The application could not be reached (refused, reset before an answer): retryable 503 while the node
    /// upgrades (the stop–start window), 502 otherwise.
    public static func applicationUnreachable(_ detail: String, view: LayerView) -> LayerRefusal {
        if view.upgrading {
            return LayerRefusal(code: .upgrading, status: 503,
                                message: "the node is upgrading and its application is not serving: \(detail)",
                                nodeVersion: view.nodeVersion, retryAfterSeconds: 1)
        }
        return LayerRefusal(code: .applicationUnavailable, status: 502, message: "the application does not answer: \(detail)",
                            nodeVersion: view.nodeVersion)
    }

    /// The SO that serves the call runs under the layer's supervision but does not answer now (starting, or
    /// restarting after it ended): retryable 503.
    public static func simulationObjectUnavailable(_ so: SimulationObject, _ detail: String, view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .simulationObjectUnavailable, status: 503, message: "the \(so) does not answer: \(detail)",
                     nodeVersion: view.nodeVersion, retryAfterSeconds: 1)
    }

    /// The application accepted the call but did not answer within the upstream timeout.
    public static func applicationTimeout(seconds: Double, view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .applicationTimeout, status: 504,
                     message: "the application did not answer within \(seconds) s", nodeVersion: view.nodeVersion)
    }

    /// A request the layer cannot forward (a proxy request without a target, a CONNECT, a bad path).
    public static func badRequest(_ message: String, status: Int = 400, view: LayerView) -> LayerRefusal {
        LayerRefusal(code: .badRequest, status: status, message: message, nodeVersion: view.nodeVersion)
    }

    /// The body: one JSON object (canonical JSON: keys sorted) and a newline.
    public var json: String {
        var fields: [String: JSONValue] = ["error": .string(code.rawValue), "message": .string(message),
                                           "node-version": .int(nodeVersion)]
        if let callerVersion { fields["version"] = .int(callerVersion) }
        if let retryAfterSeconds { fields["retry-after"] = .int(Int64(retryAfterSeconds)) }
        return String(decoding: JSONValue.object(fields).canonicalBytes(), as: UTF8.self) + "\n"
    }
}

/// The header names of the layer (docs/REFERENCE.md, "The upgrade layer").
public enum LayerHeader {
    /// The caller's version on a call; the node's version on every answer and on outgoing calls.
    public static let version = "Upgradefs-Version"
    /// On answers the layer gives itself: the refusal's code (absent on the application's answers).
    public static let error = "Upgradefs-Error"
}
