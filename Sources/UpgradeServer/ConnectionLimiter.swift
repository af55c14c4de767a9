import Foundation
import NIOCore
import NIOHTTPTypes

/// Keeps the server's open connections under a limit, so that misbehaving
/// clients cannot use up the process's descriptors (the publisher needs some)
/// or starve well-behaved ones. When a new connection would pass the limit, the
/// connection that has been idle longest — no request in progress: a request
/// head still being sent, or a kept-alive connection between requests — is
/// closed to make room. Connections answering a request (long polls included)
/// are never closed for this; when every connection is busy, the new one is.
final class ConnectionLimiter: @unchecked Sendable {
    let limit: Int
    private let lock = NSLock()
    private var connections: [ObjectIdentifier: Entry] = [:]

    private struct Entry {
        let channel: any Channel
        var busy: Bool
        var idleSince: ContinuousClock.Instant
    }

    init(limit: Int) {
        precondition(limit >= 1)
        self.limit = limit
    }

    /// Registers a new connection; returns false when it must be closed (every other connection is busy).
    func opened(_ channel: any Channel) -> Bool {
        let victim: (any Channel)?
        let admitted: Bool
        (victim, admitted) = lock.withLock { () -> ((any Channel)?, Bool) in
            guard connections.count >= limit else {
                connections[ObjectIdentifier(channel)] = Entry(channel: channel, busy: false, idleSince: .now)
                return (nil, true)
            }
            let oldest = connections.filter { !$0.value.busy }.min { $0.value.idleSince < $1.value.idleSince }
            guard let oldest else { return (nil, false) }
            connections[oldest.key] = nil
            connections[ObjectIdentifier(channel)] = Entry(channel: channel, busy: false, idleSince: .now)
            return (oldest.value.channel, true)
        }
        victim?.close(promise: nil)
        return admitted
    }

    /// A request began (`busy`) or its response ended (not busy) on this connection.
    func setBusy(_ channel: any Channel, _ busy: Bool) {
        lock.withLock {
            connections[ObjectIdentifier(channel)]?.busy = busy
            if !busy { connections[ObjectIdentifier(channel)]?.idleSince = .now }
        }
    }

    func closed(_ channel: any Channel) {
        lock.withLock { _ = connections.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// The limit that leaves `reserve` descriptors of `descriptorLimit` to the rest of the server (the
    /// publisher's scans and copies, the database, files being sent): at most `requested`, at least 1.
    static func effectiveLimit(requested: Int, descriptorLimit: Int) -> Int {
        let reserve = min(reservedDescriptors, descriptorLimit / 2)
        return max(1, min(requested, descriptorLimit - reserve))
    }

    /// Descriptors kept out of the connections' reach (a bundle scan holds one per directory level, at
    /// most about 513 with paths limited to 1024 bytes).
    static let reservedDescriptors = 1024
}

/// One per connection, after the HTTP decoder: tells the limiter when the
/// connection opens, closes, and starts and ends requests.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limiter: ConnectionLimiter
    private var channel: (any Channel)?
    private var requestsInProgress = 0

    init(limiter: ConnectionLimiter) {
        self.limiter = limiter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { register(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        register(context)
        context.fireChannelActive()
    }

    private func register(_ context: ChannelHandlerContext) {
        guard channel == nil else { return }
        channel = context.channel
        if !limiter.opened(context.channel) {
            channel = nil
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        unregister()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        unregister()
    }

    private func unregister() {
        if let channel { limiter.closed(channel) }
        channel = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            requestsInProgress += 1
            if requestsInProgress == 1, let channel { limiter.setBusy(channel, true) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), requestsInProgress > 0 {
            requestsInProgress -= 1
            if requestsInProgress == 0, let channel { limiter.setBusy(channel, false) }
        }
        context.write(data, promise: promise)
    }
}
