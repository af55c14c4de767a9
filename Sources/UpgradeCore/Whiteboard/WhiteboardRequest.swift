import Crypto
import Foundation

/// The ordered stream a request belongs to; replay state is kept per (node, channel).
public enum WhiteboardChannel: String, Sendable, Hashable, CaseIterable {
    /// File writes (put/delete) from the node's journal, in order.
    case outbox
    /// Lock operations (acquire/release), which must not wait behind the outbox.
    case direct
}

/// One change a node asks the server to make (docs/DESIGN.md, "Wire protocol").
public struct WhiteboardRequest: Sendable, Hashable {
    public static let domain = Array("upgradefs-udb-request-v1\n".utf8)
    public static let nonceBytes = 16

    public var node: String
    public var channel: WhiteboardChannel
    public var seq: Int64
    public var op: WhiteboardOp
    public var path: String
    /// The file's new content (put only; nil otherwise).
    public var content: [UInt8]?
    /// 16 random bytes, hex in JSON.
    public var nonce: [UInt8]

    public init(
        node: String, channel: WhiteboardChannel, seq: Int64, op: WhiteboardOp, path: String,
        content: [UInt8]? = nil, nonce: [UInt8]
    ) {
        self.node = node
        self.channel = channel
        self.seq = seq
        self.op = op
        self.path = path
        self.content = content
        self.nonce = nonce
    }

    public func toJSON() -> JSONValue {
        var members: [String: JSONValue] = [
            "node": .string(node), "channel": .string(channel.rawValue), "seq": .int(seq),
            "op": .string(op.rawValue), "path": .string(path), "nonce": .string(Hex.encode(nonce)),
        ]
        if let content { members["content"] = .string(Data(content).base64EncodedString()) }
        return .object(members)
    }

    /// Parses and checks the shape (not the rules, not the signature).
    public init(json: JSONValue) throws(WhiteboardProtocolError) {
        func fail(_ problem: String) -> WhiteboardProtocolError { WhiteboardProtocolError("request " + problem) }
        guard let members = json.objectValue else { throw fail("is not an object") }
        let allowed: Set<String> = ["node", "channel", "seq", "op", "path", "content", "nonce"]
        if let unknown = members.keys.first(where: { !allowed.contains($0) }) { throw fail("has unknown member \"\(unknown)\"") }
        guard let node = members["node"]?.stringValue, WhiteboardPath.isNodeName(node) else { throw fail("has no valid node") }
        guard let channel = members["channel"]?.stringValue.flatMap(WhiteboardChannel.init(rawValue:)) else {
            throw fail("channel must be outbox or direct")
        }
        guard let seq = members["seq"]?.intValue, seq >= 1 else { throw fail("seq must be an integer ≥ 1") }
        guard let op = members["op"]?.stringValue.flatMap(WhiteboardOp.init(rawValue:)) else {
            throw fail("op must be put, delete, acquire, release or session")
        }
        guard let path = members["path"]?.stringValue else { throw fail("has no path") }
        guard let nonceHex = members["nonce"]?.stringValue, let nonce = Hex.decode(nonceHex),
              nonce.count == Self.nonceBytes, Hex.encode(nonce) == nonceHex
        else { throw fail("nonce must be 32 lowercase hex digits") }
        var content: [UInt8]?
        if let value = members["content"] {
            guard op == .put || op == .session else { throw fail("has content but op is \(op.rawValue)") }
            guard let text = value.stringValue, let data = Data(base64Encoded: text) else { throw fail("content is not base64") }
            content = Array(data)
        } else if op == .put || op == .session {
            throw fail("op \(op.rawValue) needs content")
        }
        switch (channel, op) {
        case (.outbox, .put), (.outbox, .delete), (.direct, .acquire), (.direct, .release), (.direct, .session): break
        default: throw fail("op \(op.rawValue) does not belong on channel \(channel.rawValue)")
        }
        self.init(node: node, channel: channel, seq: seq, op: op, path: path, content: content, nonce: nonce)
    }

    /// What the node's key signs: the domain prefix and the canonical JSON of the request.
    public func signingBytes() -> [UInt8] { Self.domain + toJSON().canonicalBytes() }

    /// SHA-256 of `signingBytes()`: tells a retry of the last request from a different one.
    public func digest() -> [UInt8] { Array(SHA256.hash(data: signingBytes())) }

    public func signed(by key: some Ed25519Signing) -> SignedWhiteboardRequest {
        SignedWhiteboardRequest(request: self, signature: key.sign(signingBytes()))
    }
}

/// `{"request": {…}, "signature": "<hex>"}`, the body of `POST /v1/udb/apply`.
public struct SignedWhiteboardRequest: Sendable, Hashable {
    public var request: WhiteboardRequest
    public var signature: [UInt8]

    public init(request: WhiteboardRequest, signature: [UInt8]) {
        self.request = request
        self.signature = signature
    }

    public func toJSON() -> JSONValue {
        .object(["request": request.toJSON(), "signature": .string(Hex.encode(signature))])
    }

    /// The HTTP body (canonical JSON).
    public func encoded() -> [UInt8] { toJSON().canonicalBytes() }

    public static func decode(_ bytes: [UInt8]) throws(WhiteboardProtocolError) -> SignedWhiteboardRequest {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw WhiteboardProtocolError("body is not JSON: \(error)") }
        guard let members = json.objectValue, Set(members.keys) == ["request", "signature"] else {
            throw WhiteboardProtocolError("body must be {\"request\": {…}, \"signature\": \"<hex>\"}")
        }
        guard let hex = members["signature"]?.stringValue, let signature = Hex.decode(hex), signature.count == 64 else {
            throw WhiteboardProtocolError("signature must be 128 hex digits")
        }
        return SignedWhiteboardRequest(request: try WhiteboardRequest(json: members["request"]!), signature: signature)
    }

    public func verify(publicKey: [UInt8], verifier: some Ed25519Verifying) -> Bool {
        verifier.isValid(signature: signature, message: request.signingBytes(), publicKey: publicKey)
    }
}

/// A request or response body that does not have the shape of the protocol.
public struct WhiteboardProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
