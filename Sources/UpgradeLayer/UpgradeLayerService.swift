import AsyncHTTPClient
import Dispatch
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import UpgradeCore
import UpgradeManager

/// What `upgradefs layer` runs (docs/DESIGN.md, "Upgrade layer").
public struct LayerConfiguration: Sendable {
    public var layer: NodeConfig.Layer
    public var mount: String
    public var className: String
    /// The node's root (node.toml `root`): the SOs' state directories and output files are under it.
    public var root: String
    /// How often the mount is read for the node's version and state.
    public var refreshIntervalSeconds: Double

    public init(layer: NodeConfig.Layer, mount: String, className: String, root: String,
                refreshIntervalSeconds: Double = 0.25) {
        self.layer = layer
        self.mount = mount
        self.className = className
        self.root = root
        self.refreshIntervalSeconds = refreshIntervalSeconds
    }
}

/// The layer's last view of its node, shared by the poller (writes) and every call (reads).
final class LayerViewHolder: Sendable {
    private let view: Mutex<LayerView>
    init(_ view: LayerView) { self.view = Mutex(view) }
    var current: LayerView { view.withLock { $0 } }
    /// Stores `new`; true when it differs from what was there.
    func replace(with new: LayerView) -> Bool {
        view.withLock { old in
            defer { old = new }
            return old != new
        }
    }
}

/// Runs the layer until SIGTERM/SIGINT or cancellation: the public listener (calls into the node), the proxy
/// listener (the application's outgoing calls) when configured, and the poller of the mount.
/// `onReady` is called once both listen. Throws when the mount cannot be read at start or an address is taken.
public func runUpgradeLayer(_ configuration: LayerConfiguration, logger: Logger,
                            onReady: (@Sendable () async -> Void)? = nil) async throws {
    let reader = LayerViewReader(mount: configuration.mount, className: configuration.className)
    let views = LayerViewHolder(try reader.read())
    let settings = configuration.layer
    let timeout = TimeAmount.milliseconds(Int64(settings.upstreamTimeoutSeconds * 1000))

    var clientConfiguration = HTTPClient.Configuration(
        redirectConfiguration: .disallow,
        timeout: .init(connect: min(timeout, .seconds(5)), read: timeout),
        connectionPool: .init(idleTimeout: .seconds(55), concurrentHTTP1ConnectionsPerHostSoftLimit: 64),
        decompression: .disabled)
    clientConfiguration.httpVersion = .http1Only
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)

    let application = "http://\(settings.app)"
    let supervisor = SimulationObjectSupervisor(root: configuration.root, application: application, logger: logger)
    let forwarder = LayerForwarder(client: client, views: views, simulationObjects: supervisor,
                                   upstreamTimeoutSeconds: settings.upstreamTimeoutSeconds,
                                   refreshIntervalSeconds: configuration.refreshIntervalSeconds)
    let listening = ListenerCount()
    let listeners = settings.proxy == nil ? 1 : 2
    let ready: @Sendable (String, any Channel) async -> Void = { what, channel in
        logger.info("upgrade layer listening", metadata: [
            "layer.listener": .string(what), "http.address": .string("\(channel.localAddress?.description ?? "?")"),
        ])
        if listening.increment() == listeners { await onReady?() }
    }
    let poller = ViewPoller(reader: reader, views: views, supervisor: supervisor,
                            intervalSeconds: configuration.refreshIntervalSeconds, logger: logger)
    var services: [any Service] = [
        Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in
                await forwarder.inbound(request, application: application)
            },
            server: .http1(configuration: HTTP1Channel.Configuration(idleTimeout: .seconds(75))),
            configuration: ApplicationConfiguration(address: .hostname(settings.listen.host, port: settings.listen.port),
                                                    serverName: nil),
            onServerRunning: { await ready("public", $0) },
            logger: logger),
        poller,
    ]
    if let proxy = settings.proxy {
        services.append(Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in await forwarder.outbound(request) },
            server: .http1(configuration: HTTP1Channel.Configuration(idleTimeout: .seconds(75))),
            configuration: ApplicationConfiguration(address: .hostname(proxy.host, port: proxy.port), serverName: nil),
            onServerRunning: { await ready("proxy", $0) },
            logger: logger))
    }
    let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    let running = Task { try await group.run() }
    do {
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    } catch {
        await poller.stopSimulationObjects()
        try? await client.shutdown()
        throw error
    }
    await poller.stopSimulationObjects()
    try await client.shutdown()
}

/// How many listeners are up (readiness is reported once all are).
final class ListenerCount: Sendable {
    private let count = Mutex(0)
    func increment() -> Int { count.withLock { $0 += 1; return $0 } }
}

/// Reads the mount every interval and has the supervisor start and stop SOs by it; a view that changed replaces
/// the old one at once (calls route by it from then on). A read that fails keeps the last view (and the SOs) and
/// is logged once until reads succeed again.
struct ViewPoller: Service {
    let reader: LayerViewReader
    let views: LayerViewHolder
    let supervisor: SimulationObjectSupervisor
    let intervalSeconds: Double
    let logger: Logger
    /// Reads and supervision run on this queue, one at a time.
    let queue = DispatchQueue(label: "upgradefs.layer.poller")

    /// Reads on a thread of its own: a stuck mount (or an SO slow to stop) blocks it, never the async pool that
    /// serves calls.
    private func readOffThePool() async throws -> LayerView {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result {
                    var view = try reader.read()
                    let shipped = reader.shippedSimulationObjects(classVersions: view.classVersions)
                    view.simulationObjects = supervisor.reconcile(view: view, shipped: shipped, now: monotonicSeconds())
                    return view
                })
            }
        }
    }

    /// Stops every SO (after the poller has ended).
    func stopSimulationObjects() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                supervisor.stopAll()
                continuation.resume()
            }
        }
    }

    func run() async throws {
        var failing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: .milliseconds(Int64(intervalSeconds * 1000)))
            do {
                let view = try await readOffThePool()
                if failing { logger.info("the mount reads again") }
                failing = false
                if views.replace(with: view) {
                    logger.info("node view changed", metadata: [
                        "node.version": .stringConvertible(view.nodeVersion), "upgrade.latest": .stringConvertible(view.latest),
                        "layer.installed": .stringConvertible(view.installedVersion),
                        "node.upgrading": .stringConvertible(view.upgrading),
                    ])
                }
            } catch {
                if !failing { logger.warning("cannot read the mount; routing by the last view", metadata: ["error": "\(error)"]) }
                failing = true
            }
        }
    }
}
