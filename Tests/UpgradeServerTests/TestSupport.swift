#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer
// Exported so that every file of this target sees the shared helpers (TemporaryDirectory, Harness).
@_exported import TestSupport

enum Files {
    static func write(_ path: String, _ text: String, mode: mode_t = 0o644) {
        write(path, Array(text.utf8), mode: mode)
    }

    static func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) {
        let directory = (path as NSString).deletingLastPathComponent
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        chmod(path, mode)
    }

    static func read(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map(Array.init)
    }

    static func readText(_ path: String) -> String? {
        read(path).map { String(decoding: $0, as: UTF8.self) }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func symlink(_ target: String, at path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        #expect(Glibc.symlink(target, path) == 0)
    }

    static func mkdir(_ path: String) {
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        TargetFile(describing: bytes).sha256
    }
}

/// Builds bundles in a staging directory and moves them into the publish
/// directory in one rename, as an operator's `mv` would.
struct BundleFactory {
    let staging: String
    let publish: String

    /// A valid bundle: manifest, payload with a binary and a text file, an executable sf.
    @discardableResult
    func make(_ name: String, version: Int, extraManifest: String = "", customize: (String) -> Void = { _ in }) -> String {
        let root = staging + "/" + name
        Files.write(root + "/upgrade.toml", "class = \"kvstore\"\nversion = \(version)\n\(extraManifest)")
        Files.write(root + "/payload/bin/app", Array("binary of version \(version)\n".utf8) + (0..<3000).map { UInt8($0 % 251) }, mode: 0o755)
        Files.write(root + "/payload/README", "read me\n")
        Files.write(root + "/sf", "#!/bin/sh\nexit 0\n", mode: 0o755)
        customize(root)
        return root
    }

    /// Moves a staged bundle into the publish directory.
    func drop(_ name: String) {
        #expect(rename(staging + "/" + name, publish + "/" + name) == 0)
    }
}

/// One server's directories and key file, and an in-process publisher or a live server over them.
final class ServerFixture: @unchecked Sendable {
    let temporary = TemporaryDirectory()
    let keys: ServerKeyFile
    var configuration: ServerConfiguration
    let bundles: BundleFactory
    static var logger: Logger { InProcessServer.logger }

    init(settleMilliseconds: Int = 0, limits: BundleLimits = .default, timestampExpirySeconds: Int = 86400) {
        keys = ServerKeyFile.generate()
        let keyPath = temporary.path + "/server.key"
        try! keys.write(to: keyPath)
        configuration = ServerConfiguration(
            stateDirectory: temporary.path + "/state", publishDirectory: temporary.path + "/publish",
            keyFile: keyPath, host: "127.0.0.1", port: 0, settleMilliseconds: settleMilliseconds,
            timestampExpirySeconds: timestampExpirySeconds, scanIntervalMilliseconds: 20, limits: limits,
            notifyTimeoutMilliseconds: 3000)
        Files.mkdir(temporary.path + "/staging")
        Files.mkdir(configuration.publishDirectory)
        bundles = BundleFactory(staging: temporary.path + "/staging", publish: configuration.publishDirectory)
    }

    deinit { temporary.remove() }

    var metadataDirectory: String { configuration.stateDirectory + "/metadata" }
    var publishDirectory: String { configuration.publishDirectory }

    func makePublisher() throws -> Publisher {
        try Publisher(configuration: configuration, keys: keys, logger: Self.logger)
    }

    func marker(_ bundle: String, _ suffix: String) -> String? {
        Files.readText(publishDirectory + "/" + bundle + suffix)
    }

    /// Every file under `metadata/`, by name, with its SHA-256, to prove nothing changed.
    func metadataSnapshot() -> [String: String] {
        var result: [String: String] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: metadataDirectory)) ?? [] {
            result[name] = Files.read(metadataDirectory + "/" + name).map(Files.sha256)
        }
        return result
    }
}

extension InProcessServer {
    func get(_ path: String, method: String = "GET") async throws -> HTTPResult {
        try await HTTPResult.request(port: port, method: method, path: path)
    }
}

/// A minimal HTTP/1.1 client over a socket: sends the path exactly as given
/// (no normalisation), so tests can send what a browser would not.
struct HTTPResult: Sendable {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    /// Sends one request over a fresh connection; with a `body`, as JSON (`Content-Type: application/json`).
    static func request(port: Int, method: String = "GET", path: String, body: [UInt8]? = nil) async throws -> HTTPResult {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try blockingRequest(port: port, method: method, path: path, body: body) })
            }
            thread.start()
        }
    }

    private static func blockingRequest(port: Int, method: String, path: String, body: [UInt8]?) throws -> HTTPResult {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var requestHead = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let body { requestHead += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let request = Array((requestHead + "\r\n").utf8) + (body ?? [])
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw HarnessError("send failed") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw HarnessError("no HTTP header in response: \(String(decoding: response, as: UTF8.self))")
        }
        let head = String(decoding: response[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw HarnessError("bad status line \(head[0])") }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(response[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            body = dechunk(body)
        }
        return HTTPResult(status: status, headers: headers, body: body)
    }

    private static func dechunk(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while index < data.count {
            guard let lineEnd = data[index...].firstRange(of: Array("\r\n".utf8)) else { break }
            let size = Int(String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self), radix: 16) ?? 0
            if size == 0 { break }
            out.append(contentsOf: data[lineEnd.upperBound..<(lineEnd.upperBound + size)])
            index = lineEnd.upperBound + size + 2
        }
        return out
    }
}

/// Verifies a metadata file's signature by `key` over the canonical bytes of `signed`.
func verifiedPayload<P: TUFPayload>(_ bytes: [UInt8], as type: P.Type, key: [UInt8]) throws -> P {
    let decoded = try MetadataCodec.decode(bytes, as: type)
    let keyID = TUFKey(ed25519PublicKey: key).keyID
    let verifier = SodiumVerifier()
    let valid = decoded.signatures.contains {
        $0.keyID == keyID && verifier.isValid(signature: $0.signature, message: decoded.signedBytes, publicKey: key)
    }
    guard valid else { throw HarnessError("\(P.role.rawValue) is not signed by its key") }
    // The signed bytes are the canonical form of the `signed` object exactly as received.
    #expect(decoded.signedBytes == (try JSONValue.parse(bytes))["signed"]!.canonicalBytes())
    return decoded.payload
}

/// Waits until `condition` holds, polling every 20 ms, at most `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}
