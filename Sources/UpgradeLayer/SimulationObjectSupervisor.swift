#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import Synchronization
import UpgradeManager

/// Carries out `SimulationObjectPlan.toRun`: starts each SO the layer should run (`ProcessRunner.start`, its own
/// process group), waits until it accepts connections, restarts it with back-off when it exits, and stops it when
/// the plan no longer names it (docs/REFERENCE.md, "Simulation objects"; docs/DESIGN.md, "Upgrade layer").
/// `reconcile` is called by one thread at a time (the view poller); `address(of:)` by any call.
final class SimulationObjectSupervisor: @unchecked Sendable {
    struct Running {
        var pid: pid_t
        var delegate: String
        var startedAt: Double
        var ready: Bool
    }

    let root: String
    let application: String
    let logger: Logger
    /// How long an SO may take to accept connections before it counts as failed.
    let readinessTimeoutSeconds: Double

    /// The addresses of the SOs that accept connections: what calls are forwarded to.
    private let readyAddresses = Mutex<[SimulationObject: String]>([:])
    // Touched by `reconcile` and `stopAll` only.
    private var running: [SimulationObject: Running] = [:]
    private var ports: [SimulationObject: Int] = [:]
    private var failures: [SimulationObject: (count: Int, notBefore: Double)] = [:]

    init(root: String, application: String, logger: Logger, readinessTimeoutSeconds: Double = 10) {
        self.root = root
        self.application = application
        self.logger = logger
        self.readinessTimeoutSeconds = readinessTimeoutSeconds
    }

    /// The `host:port` of `so` when it accepts connections.
    func address(of so: SimulationObject) -> String? { readyAddresses.withLock { $0[so] } }

    func stateDirectory(_ so: SimulationObject) -> String { root + "/so/\(so.kind.rawValue)-\(so.version)" }
    func outputPath(_ so: SimulationObject) -> String { root + "/ldb/out/so-\(so.kind.rawValue)-\(so.version).out" }

    /// Brings the running SOs in line with the plan for `view`; `shipped` maps each SO the bundles hold to its
    /// executable. Returns the SOs under supervision (running, starting or waiting to restart): the router sends
    /// their calls on, and the forwarder answers 503 while one is not ready.
    func reconcile(view: LayerView, shipped: [SimulationObject: String], now: Double) -> Set<SimulationObject> {
        let wanted = SimulationObjectPlan.toRun(view: view, shipped: Set(shipped.keys))
        for so in Set(running.keys).subtracting(wanted) { stop(so, why: "no longer needed") }
        for so in Set(failures.keys).subtracting(wanted) { failures[so] = nil }
        for so in wanted where ports[so] == nil { ports[so] = Self.freeLoopbackPort() }

        for so in wanted.sorted(by: { $0.version < $1.version }) {
            guard let executable = shipped[so], let port = ports[so] else { continue }
            let delegate: String
            switch LayerRouter.delegate(of: so, view: view) {
            case .application?: delegate = application
            case .simulationObject(let next)?:
                guard let nextPort = ports[next] else { continue }  // it gets one at the next reconcile
                delegate = "http://127.0.0.1:\(nextPort)"
            case nil: continue
            }
            if var entry = running[so] {
                var status: Int32 = 0
                if waitpid(entry.pid, &status, WNOHANG) == entry.pid {
                    running[so] = nil
                    setReady(so, nil)
                    // Never ready: its port may be someone else's now; the next start picks another (and the SOs
                    // that delegate to it restart with it).
                    if !entry.ready { ports[so] = nil }
                    let ending = (status & 0x7f) == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(status & 0x7f)"
                    failed(so, now: now, why: "\(ending); its output: \(outputPath(so))")
                    continue
                }
                if entry.delegate != delegate {
                    stop(so, why: "its delegate moved to \(delegate)")
                } else if !entry.ready {
                    if Self.acceptsConnections(port: port) {
                        entry.ready = true
                        running[so] = entry
                        failures[so] = nil
                        setReady(so, "127.0.0.1:\(port)")
                        logger.info("simulation object ready", metadata: meta(so, pid: entry.pid, port: port))
                    } else if now - entry.startedAt > readinessTimeoutSeconds {
                        stop(so, why: "it did not accept connections within \(readinessTimeoutSeconds) s")
                        ports[so] = nil
                        failed(so, now: now, why: "not ready in time")
                    }
                    continue
                } else {
                    continue
                }
            }
            if let waiting = failures[so], now < waiting.notBefore { continue }
            start(so, executable: executable, port: port, delegate: delegate, view: view, now: now)
        }
        return wanted
    }

    private func start(_ so: SimulationObject, executable: String, port: Int, delegate: String, view: LayerView, now: Double) {
        let state = stateDirectory(so)
        for directory in [root, root + "/so", state, root + "/ldb", root + "/ldb/out"] { mkdir(directory, 0o700) }
        let output = outputPath(so)
        // The last run's output stays beside the new one: it says why it ended.
        rename(output, output + ".previous")
        let bundle = String(executable.dropLast(SimulationObjectPlan.path(so.kind).count + 1))
        var command = Command(executable: executable, environment: [
            "UPGRADEFS_SO_KIND": so.kind.rawValue,
            "UPGRADEFS_SO_VERSION": "\(so.version)",
            "UPGRADEFS_SO_LISTEN": "127.0.0.1:\(port)",
            "UPGRADEFS_SO_DELEGATE": delegate,
            "UPGRADEFS_SO_STATE": state,
            "UPGRADEFS_NODE_VERSION": "\(view.nodeVersion)",
            "UPGRADEFS_BUNDLE": bundle,
        ], workingDirectory: bundle, outputPath: output, timeoutSeconds: .infinity)
        do {
            let pid = try ProcessRunner.start(command)
            running[so] = Running(pid: pid, delegate: delegate, startedAt: now, ready: false)
            logger.info("simulation object started", metadata: meta(so, pid: pid, port: port).merging(
                ["so.delegate": .string(delegate), "so.output": .string(output)]) { $1 })
        } catch {
            failed(so, now: now, why: error.description)
        }
    }

    private func stop(_ so: SimulationObject, why: String) {
        setReady(so, nil)
        guard let entry = running.removeValue(forKey: so) else { return }
        logger.info("stopping simulation object: \(why)", metadata: meta(so, pid: entry.pid, port: ports[so]))
        ProcessRunner.killGroup(entry.pid)
    }

    private func failed(_ so: SimulationObject, now: Double, why: String) {
        let count = (failures[so]?.count ?? 0) + 1
        let delay = SimulationObjectPlan.restartDelay(failures: count)
        failures[so] = (count, now + delay)
        logger.warning("simulation object failed: \(why); restarting in \(delay) s",
                       metadata: meta(so, pid: nil, port: ports[so]))
    }

    /// Stops every SO (the layer is ending).
    func stopAll() {
        for so in Array(running.keys) { stop(so, why: "the layer is stopping") }
    }

    private func setReady(_ so: SimulationObject, _ address: String?) {
        readyAddresses.withLock { $0[so] = address }
    }

    private func meta(_ so: SimulationObject, pid: pid_t?, port: Int?) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["so.kind": .string(so.kind.rawValue), "so.version": .stringConvertible(so.version)]
        if let pid { metadata["so.pid"] = .stringConvertible(pid) }
        if let port { metadata["so.listen"] = .string("127.0.0.1:\(port)") }
        return metadata
    }

    /// A loopback port free now (the kernel's pick for a socket bound to port 0, then closed).
    static func freeLoopbackPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : 0
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port` (loopback: refused or accepted at once).
    static func acceptsConnections(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }
}
