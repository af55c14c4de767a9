import TOMLKit

extension NodeConfig {
    /// `[layer]` of node.toml: where `upgradefs layer` listens and where it forwards (docs/REFERENCE.md, "node.toml").
    public struct Layer: Sendable, Equatable {
        public static let knownKeys = ["listen", "app", "proxy", "upstream-timeout"]
        public static let defaultUpstreamTimeoutSeconds: Double = 30

        /// The application's public address: the layer owns it.
        public var listen: HostPort
        /// The application's private address: where the layer forwards calls for the node's version.
        public var app: HostPort
        /// The forward proxy the application's outgoing calls go through (`HTTP_PROXY`); nil = none.
        public var proxy: HostPort?
        /// How long the application may stay silent (connect, or between bytes of an answer) before the caller gets 504.
        public var upstreamTimeoutSeconds: Double

        public init(listen: HostPort, app: HostPort, proxy: HostPort? = nil,
                    upstreamTimeoutSeconds: Double = Layer.defaultUpstreamTimeoutSeconds) {
            self.listen = listen
            self.app = app
            self.proxy = proxy
            self.upstreamTimeoutSeconds = upstreamTimeoutSeconds
        }

        /// What the application's `start` and `stop` get besides the manager's variables: the private address to
        /// listen on, and with a proxy, `HTTP_PROXY`/`http_proxy` so that its outgoing calls go through the layer.
        public var applicationEnvironment: [String: String] {
            var environment = ["UPGRADEFS_APP_ADDRESS": app.description, "UPGRADEFS_PUBLIC_ADDRESS": listen.description]
            if let proxy {
                environment["HTTP_PROXY"] = "http://\(proxy)"
                environment["http_proxy"] = "http://\(proxy)"
            }
            return environment
        }

        static func parse(_ table: TOMLTable, fail: (String, String) -> NodeConfigError) throws(NodeConfigError) -> Layer {
            for key in table.keys.sorted() where !knownKeys.contains(key) {
                throw fail(key, "is not a known key of [layer] (known: \(knownKeys.joined(separator: ", ")))")
            }
            func address(_ key: String) throws(NodeConfigError) -> HostPort? {
                guard let raw = table[key] else { return nil }
                guard let text = raw.string else { throw fail(key, "must be a string \"HOST:PORT\"") }
                guard let address = HostPort(text) else {
                    throw fail(key, "\"\(text)\" is not an address: expected HOST:PORT (a host name or IPv4 address, a port 1-65535)")
                }
                return address
            }
            guard let listen = try address("listen") else { throw fail("listen", "is required (the application's public address)") }
            guard let app = try address("app") else { throw fail("app", "is required (the application's private address)") }
            let proxy = try address("proxy")
            guard listen != app else { throw fail("app", "must differ from listen (\(listen)): the layer owns the public address") }
            if let proxy, proxy == listen || proxy == app {
                throw fail("proxy", "must differ from listen and app (\(proxy))")
            }
            var timeout = defaultUpstreamTimeoutSeconds
            if let raw = table["upstream-timeout"] {
                guard let number = raw.int.map(Double.init) ?? raw.double, number > 0, number <= 86_400 else {
                    throw fail("upstream-timeout", "must be a number of seconds, more than 0 and at most 86400")
                }
                timeout = number
            }
            return Layer(listen: listen, app: app, proxy: proxy, upstreamTimeoutSeconds: timeout)
        }
    }
}

/// `HOST:PORT` with a host name or an IPv4 address (no IPv6 literal) and a port 1–65535.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard !host.isEmpty, host.utf8.count <= 253,
              host.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-".unicodeScalars.contains($0)) }),
              !portText.isEmpty, portText.utf8.count <= 5, portText.allSatisfy(\.isASCII),
              let port = Int(portText), (1...65535).contains(port) else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }
}
