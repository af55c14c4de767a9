import Crypto
import Foundation

/// Signatures the server puts on whiteboard answers: Ed25519 by the server's
/// timestamp key over `upgradefs-udb-response-v1\n` + the canonical JSON of
/// what is signed (the apply answer's `response` object, or a whole read body).
public enum WhiteboardServerSignature {
    public static let domain = Array("upgradefs-udb-response-v1\n".utf8)
    /// Header carrying the signature of a read answer: `<keyid>:<hex>`.
    public static let headerName = "Upgradefs-Signature"

    public static func signingBytes(_ value: JSONValue) -> [UInt8] { domain + value.canonicalBytes() }

    public static func sign(_ value: JSONValue, key: some Ed25519Signing) -> [UInt8] { key.sign(signingBytes(value)) }
    /// Signs a body that is already canonical JSON (so a server builds the bytes once for signature and body).
    public static func sign(canonicalBody body: [UInt8], key: some Ed25519Signing) -> [UInt8] { key.sign(domain + body) }

    public static func isValid(_ value: JSONValue, signature: [UInt8], publicKey: [UInt8], verifier: some Ed25519Verifying) -> Bool {
        verifier.isValid(signature: signature, message: signingBytes(value), publicKey: publicKey)
    }

    /// True when `signature` covers exactly `body`, the bytes received (a read answer or a refusal, signed whole).
    public static func isValid(body: [UInt8], signature: [UInt8], publicKey: [UInt8], verifier: some Ed25519Verifying) -> Bool {
        verifier.isValid(signature: signature, message: domain + body, publicKey: publicKey)
    }

    /// `<keyid>:<hex signature>` (the key id as TUF computes it).
    public static func header(keyID: String, signature: [UInt8]) -> String { keyID + ":" + Hex.encode(signature) }

    public static func parseHeader(_ text: String) -> (keyID: String, signature: [UInt8])? {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let signature = Hex.decode(String(parts[1])), signature.count == 64 else { return nil }
        return (String(parts[0]), signature)
    }
}

/// The server's answer to an applied (or duplicate) request.
public struct WhiteboardResponse: Sendable, Hashable {
    public enum Result: String, Sendable, Hashable {
        case ok
        /// A retry of the last request on its channel: answered as before, not applied again.
        case duplicate
    }

    /// The whiteboard's revision after the request.
    public var revision: Int64
    public var result: Result
    /// The request's nonce.
    public var nonce: [UInt8]
    /// In the answer to a session claim: the last seq the server took from the node on each channel, so that a new
    /// journal (a wiped cache, a clock that was once far ahead) starts its new writes above them (`last_seqs`).
    public var lastSeqs: [WhiteboardChannel: Int64]

    public init(revision: Int64, result: Result, nonce: [UInt8], lastSeqs: [WhiteboardChannel: Int64] = [:]) {
        self.revision = revision
        self.result = result
        self.nonce = nonce
        self.lastSeqs = lastSeqs
    }

    public func toJSON() -> JSONValue {
        var members: [String: JSONValue] = [
            "revision": .int(revision), "result": .string(result.rawValue), "nonce": .string(Hex.encode(nonce)),
        ]
        if !lastSeqs.isEmpty {
            members["last_seqs"] = .object(Dictionary(uniqueKeysWithValues: lastSeqs.map { ($0.key.rawValue, JSONValue.int($0.value)) }))
        }
        return .object(members)
    }

    public init(json: JSONValue) throws(WhiteboardProtocolError) {
        guard let revision = json["revision"]?.intValue,
              let result = json["result"]?.stringValue.flatMap(Result.init(rawValue:)),
              let nonceHex = json["nonce"]?.stringValue, let nonce = Hex.decode(nonceHex)
        else { throw WhiteboardProtocolError("response must have revision, result (ok|duplicate) and nonce") }
        var lastSeqs: [WhiteboardChannel: Int64] = [:]
        if let members = json["last_seqs"] {
            guard let members = members.objectValue else { throw WhiteboardProtocolError("response's last_seqs must be an object") }
            for (name, value) in members {
                guard let channel = WhiteboardChannel(rawValue: name), let seq = value.intValue else {
                    throw WhiteboardProtocolError("response's last_seqs must map outbox and direct to integers")
                }
                lastSeqs[channel] = seq
            }
        }
        self.init(revision: revision, result: result, nonce: nonce, lastSeqs: lastSeqs)
    }

    public func signed(by key: some Ed25519Signing) -> SignedWhiteboardResponse {
        SignedWhiteboardResponse(response: self, signature: WhiteboardServerSignature.sign(toJSON(), key: key))
    }
}

/// `{"response": {…}, "signature": "<hex>"}`, the 200 answer of `POST /v1/udb/apply`.
public struct SignedWhiteboardResponse: Sendable, Hashable {
    public var response: WhiteboardResponse
    public var signature: [UInt8]

    public init(response: WhiteboardResponse, signature: [UInt8]) {
        self.response = response
        self.signature = signature
    }

    public func encoded() -> [UInt8] {
        JSONValue.object(["response": response.toJSON(), "signature": .string(Hex.encode(signature))]).canonicalBytes()
    }

    public static func decode(_ bytes: [UInt8]) throws(WhiteboardProtocolError) -> SignedWhiteboardResponse {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw WhiteboardProtocolError("answer is not JSON: \(error)") }
        guard let response = json["response"], let hex = json["signature"]?.stringValue, let signature = Hex.decode(hex) else {
            throw WhiteboardProtocolError("answer must be {\"response\": {…}, \"signature\": \"<hex>\"}")
        }
        return SignedWhiteboardResponse(response: try WhiteboardResponse(json: response), signature: signature)
    }

    /// True when signed by `publicKey` (the server's timestamp key).
    public func verify(publicKey: [UInt8], verifier: some Ed25519Verifying) -> Bool {
        WhiteboardServerSignature.isValid(response.toJSON(), signature: signature, publicKey: publicKey, verifier: verifier)
    }

    /// The response in an apply answer `body` as received, once its signature by `publicKey` is checked over the
    /// exact bytes of the body's `response` member (never over a re-encoding of what was parsed: a member the parser
    /// would drop, or another spelling of the same value, is not what the server signed).
    ///
    /// The server writes the answer as canonical JSON (`encoded()`), so the body is exactly
    /// `{"response":` R `,"signature":"` 128 hex digits `"}`, and R is the canonical JSON the server signed. A body of
    /// any other shape is refused, even one that parses to the same value.
    public static func verifiedResponse(
        _ body: [UInt8], publicKey: [UInt8], verifier: some Ed25519Verifying
    ) throws(WhiteboardProtocolError) -> WhiteboardResponse {
        guard let (signed, signature) = AnswerLayout.split(body) else {
            throw WhiteboardProtocolError(#"malformed answer: not {"response":{…},"signature":"<hex>"} as the server writes it"#)
        }
        let json: JSONValue
        do { json = try JSONValue.parse(signed) } catch { throw WhiteboardProtocolError("malformed answer: not JSON: \(error)") }
        let response: WhiteboardResponse
        do { response = try WhiteboardResponse(json: json) } catch { throw WhiteboardProtocolError("malformed answer: \(error)") }
        guard WhiteboardServerSignature.isValid(body: signed, signature: signature, publicKey: publicKey, verifier: verifier) else {
            throw WhiteboardProtocolError("the answer is not signed by the server's key")
        }
        return response
    }

    /// Where the signed `response` member and the signature sit in an apply answer written by `encoded()`.
    enum AnswerLayout {
        static let prefix = Array(#"{"response":"#.utf8)
        static let signaturePrefix = Array(#","signature":""#.utf8)
        static let suffix = Array(#""}"#.utf8)
        /// An Ed25519 signature in hex.
        static let signatureDigits = 128

        /// The bytes of the `response` member and the decoded signature; nil when `body` is laid out otherwise.
        static func split(_ body: [UInt8]) -> (response: [UInt8], signature: [UInt8])? {
            let tail = signaturePrefix.count + signatureDigits + suffix.count
            guard body.count > prefix.count + tail, body.starts(with: prefix), body.suffix(suffix.count).elementsEqual(suffix)
            else { return nil }
            let signatureStart = body.count - suffix.count - signatureDigits
            guard body[(signatureStart - signaturePrefix.count)..<signatureStart].elementsEqual(signaturePrefix),
                  let signature = Hex.decode(String(decoding: body[signatureStart..<(body.count - suffix.count)], as: UTF8.self))
            else { return nil }
            return (Array(body[prefix.count..<(signatureStart - signaturePrefix.count)]), signature)
        }
    }
}

/// A refused request: `{"error": "<message for people>", "code": "<kind>"}`. A refusal of an apply request whose body
/// parsed also carries the request's `nonce`, the SHA-256 of the signed body received (`request`, hex: whatever was
/// changed on the way, request or signature, the node does not recognise it) and the HTTP `status`, and the whole body
/// is signed by the server's timestamp key (header `Upgradefs-Signature`, as read answers are), so that nobody on the
/// path can fake a verdict or obtain one for a request the node did not send.
public struct WhiteboardErrorBody: Sendable, Hashable {
    /// Machine-readable kinds, so the node can pick an errno without parsing the message.
    public enum Code: String, Sendable, Hashable {
        case malformed  // 400
        case unauthenticated  // 401 unknown node or bad signature
        case forbidden  // 403
        case notFound = "not-found"  // 404 release of a holder that does not exist
        case replayed  // 409
        case exists  // 409 acquire of a holder that already exists
        case conflict  // 409 a file where a directory is needed or the other way round
        case full  // 423
        case inUse = "in-use"  // 409 a session claim while another mount of the node key is live
        case internalError = "internal"  // 500
        case unavailable  // 503 the upgrade database cannot be reached for now (`WhiteboardStorageUnavailable`): retry
    }

    public var error: String
    public var code: Code
    /// The refused request's nonce (hex); nil in unsigned error answers.
    public var nonce: String?
    /// SHA-256 (hex) of the signed request body refused; nil in unsigned error answers.
    public var request: String?

    public init(error: String, code: Code, nonce: String? = nil, request: String? = nil) {
        self.error = error
        self.code = code
        self.nonce = nonce
        self.request = request
    }

    /// What `request` holds for a signed request body: SHA-256 of its bytes, hex.
    public static func requestHash(_ signedBody: [UInt8]) -> String { Hex.encode(Array(SHA256.hash(data: signedBody))) }

    public var httpStatus: Int {
        switch code {
        case .malformed: 400
        case .unauthenticated: 401
        case .forbidden: 403
        case .notFound: 404
        case .replayed, .exists, .conflict, .inUse: 409
        case .full: 423
        case .internalError: 500
        case .unavailable: 503
        }
    }

    public func toJSON() -> JSONValue {
        var members: [String: JSONValue] = ["error": .string(error), "code": .string(code.rawValue)]
        if let nonce {
            members["nonce"] = .string(nonce)
            members["status"] = .int(Int64(httpStatus))
        }
        if let request { members["request"] = .string(request) }
        return .object(members)
    }

    /// The HTTP body (canonical JSON, exactly what is signed after the domain prefix when `nonce` is set).
    public func encoded() -> [UInt8] { toJSON().canonicalBytes() }

    public static func decode(_ bytes: [UInt8]) -> WhiteboardErrorBody? {
        guard let json = try? JSONValue.parse(bytes), let error = json["error"]?.stringValue else { return nil }
        return WhiteboardErrorBody(
            error: error, code: json["code"]?.stringValue.flatMap(Code.init(rawValue:)) ?? .internalError,
            nonce: json["nonce"]?.stringValue, request: json["request"]?.stringValue)
    }

    /// A refusal of the request `sent` (the signed body, with `nonce`), or why it cannot be trusted as the server's
    /// verdict: the body must be signed by `publicKey`, echo the nonce, name the
    /// SHA-256 of exactly `sent`, and name the HTTP status it came with.
    public static func verifiedRefusal(
        status: Int, body: [UInt8], signatureHeader: String?, sent: [UInt8], nonce: [UInt8], publicKey: [UInt8],
        verifier: some Ed25519Verifying
    ) -> Result<WhiteboardErrorBody, WhiteboardProtocolError> {
        guard let json = try? JSONValue.parse(body), let refusal = decode(body) else {
            return .failure(WhiteboardProtocolError("the refusal is not a whiteboard error body"))
        }
        guard let signatureHeader, let (_, signature) = WhiteboardServerSignature.parseHeader(signatureHeader),
              WhiteboardServerSignature.isValid(body: body, signature: signature, publicKey: publicKey, verifier: verifier)
        else { return .failure(WhiteboardProtocolError("the refusal is not signed by the server's timestamp key")) }
        guard refusal.nonce == Hex.encode(nonce) else {
            return .failure(WhiteboardProtocolError("the refusal does not echo the request's nonce"))
        }
        guard refusal.request == requestHash(sent) else {
            return .failure(WhiteboardProtocolError("the refusal is for another request than the one sent (altered on the way?)"))
        }
        guard json["status"]?.intValue == Int64(status), refusal.httpStatus == status else {
            return .failure(WhiteboardProtocolError("the refusal names another status than HTTP \(status)"))
        }
        return .success(refusal)
    }
}

/// One file as `snapshot` and `changes` report it.
public struct WhiteboardFile: Sendable, Hashable {
    public var path: String
    /// nil: deleted (a tombstone, only in `changes`).
    public var content: [UInt8]?
    public var revision: Int64
    /// Unix seconds (server clock) of the last change.
    public var modifiedAt: Int64

    public init(path: String, content: [UInt8]?, revision: Int64, modifiedAt: Int64) {
        self.path = path
        self.content = content
        self.revision = revision
        self.modifiedAt = modifiedAt
    }

    public func toJSON() -> JSONValue {
        .object([
            "path": .string(path), "content": content.map { .string(Data($0).base64EncodedString()) } ?? .null,
            "revision": .int(revision), "modified_at": .int(modifiedAt),
        ])
    }

    public init(json: JSONValue) throws(WhiteboardProtocolError) {
        guard let path = json["path"]?.stringValue, let revision = json["revision"]?.intValue,
              let modifiedAt = json["modified_at"]?.intValue, let content = json["content"]
        else { throw WhiteboardProtocolError("file entry must have path, content, revision and modified_at") }
        if content.isNull {
            self.content = nil
        } else {
            guard let text = content.stringValue, let data = Data(base64Encoded: text) else {
                throw WhiteboardProtocolError("file \(path): content is not base64")
            }
            self.content = Array(data)
        }
        self.path = path
        self.revision = revision
        self.modifiedAt = modifiedAt
    }
}

/// One holder of a lock.
public struct WhiteboardHolder: Sendable, Hashable {
    public var lock: String
    public var holder: String
    /// The identity that acquired it.
    public var node: String
    /// Unix seconds (server clock).
    public var acquiredAt: Int64
    public var revision: Int64
    /// Released (only in `changes`).
    public var released: Bool

    public init(lock: String, holder: String, node: String, acquiredAt: Int64, revision: Int64, released: Bool = false) {
        self.lock = lock
        self.holder = holder
        self.node = node
        self.acquiredAt = acquiredAt
        self.revision = revision
        self.released = released
    }

    public var path: String { "locks/\(lock)/\(holder)" }

    public func toJSON() -> JSONValue {
        var members: [String: JSONValue] = [
            "lock": .string(lock), "holder": .string(holder), "node": .string(node),
            "acquired_at": .int(acquiredAt), "revision": .int(revision),
        ]
        if released { members["released"] = .bool(true) }
        return .object(members)
    }

    public init(json: JSONValue) throws(WhiteboardProtocolError) {
        guard let lock = json["lock"]?.stringValue, let holder = json["holder"]?.stringValue,
              let node = json["node"]?.stringValue, let acquiredAt = json["acquired_at"]?.intValue
        else { throw WhiteboardProtocolError("holder entry must have lock, holder, node and acquired_at") }
        self.init(
            lock: lock, holder: holder, node: node, acquiredAt: acquiredAt,
            revision: json["revision"]?.intValue ?? 0, released: json["released"]?.boolValue ?? false)
    }
}

/// The body of `GET /v1/udb/snapshot` (everything) and `GET /v1/udb/changes?after=R`
/// (what changed after R): `{"revision", "files", "holders", "nonce"}`, and `"after": R` for changes.
/// The whole body is signed (header `Upgradefs-Signature`).
public struct WhiteboardView: Sendable, Hashable {
    public var revision: Int64
    public var files: [WhiteboardFile]
    public var holders: [WhiteboardHolder]
    /// The `?nonce=` of the request, echoed ("" when none was given).
    public var nonce: String
    /// The `?after=` of a `changes` request, echoed; nil for a snapshot. Binds the answer to the question asked, so
    /// an answer to `changes?after=HIGH` fetched with the node's nonce passes neither as a snapshot nor as changes
    /// after a lower revision (which would make the node skip changes).
    public var after: Int64?

    public init(revision: Int64, files: [WhiteboardFile], holders: [WhiteboardHolder], nonce: String = "", after: Int64? = nil) {
        self.revision = revision
        self.files = files
        self.holders = holders
        self.nonce = nonce
        self.after = after
    }

    public func toJSON() -> JSONValue {
        var members: [String: JSONValue] = [
            "revision": .int(revision), "files": .array(files.map { $0.toJSON() }),
            "holders": .array(holders.map { $0.toJSON() }), "nonce": .string(nonce),
        ]
        if let after { members["after"] = .int(after) }
        return .object(members)
    }

    /// The `after=R` a read of `route` (`snapshot…` or `changes?after=R…`) asks for: what its answer must echo.
    public static func after(inRoute route: String) -> Int64? {
        guard let query = route.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        let pair = query.split(separator: "&").first { $0.hasPrefix("after=") }
        return pair.flatMap { Int64($0.dropFirst("after=".count)) }
    }

    /// The HTTP body (canonical JSON, exactly what is signed after the domain prefix).
    public func encoded() -> [UInt8] { toJSON().canonicalBytes() }

    public init(json: JSONValue) throws(WhiteboardProtocolError) {
        guard let revision = json["revision"]?.intValue, let files = json["files"]?.arrayValue,
              let holders = json["holders"]?.arrayValue
        else { throw WhiteboardProtocolError("view must have revision, files and holders") }
        var parsedFiles: [WhiteboardFile] = []
        for file in files { parsedFiles.append(try WhiteboardFile(json: file)) }
        var parsedHolders: [WhiteboardHolder] = []
        for holder in holders { parsedHolders.append(try WhiteboardHolder(json: holder)) }
        if let after = json["after"], after.intValue == nil { throw WhiteboardProtocolError("view's after must be an integer") }
        self.init(
            revision: revision, files: parsedFiles, holders: parsedHolders, nonce: json["nonce"]?.stringValue ?? "",
            after: json["after"]?.intValue)
    }

    /// Parses a read answer and checks its signature header against the
    /// server's timestamp key, its nonce against the one sent, and its `after` against the one asked
    /// (`expectedAfter` nil: a snapshot).
    public static func verifiedDecode(
        body: [UInt8], signatureHeader: String?, expectedNonce: String, expectedAfter: Int64?, publicKey: [UInt8],
        verifier: some Ed25519Verifying
    ) throws(WhiteboardProtocolError) -> WhiteboardView {
        guard let signatureHeader, let (_, signature) = WhiteboardServerSignature.parseHeader(signatureHeader) else {
            throw WhiteboardProtocolError("answer has no valid \(WhiteboardServerSignature.headerName) header")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(body) } catch { throw WhiteboardProtocolError("answer is not JSON: \(error)") }
        guard WhiteboardServerSignature.isValid(body: body, signature: signature, publicKey: publicKey, verifier: verifier) else {
            throw WhiteboardProtocolError("answer is not signed by the server's timestamp key")
        }
        let view = try WhiteboardView(json: json)
        guard view.nonce == expectedNonce else { throw WhiteboardProtocolError("answer carries another request's nonce") }
        guard view.after == expectedAfter else {
            func asked(_ after: Int64?) -> String { after.map { "changes after \($0)" } ?? "a snapshot" }
            throw WhiteboardProtocolError("answer is \(asked(view.after)), not \(asked(expectedAfter)) as asked")
        }
        return view
    }
}
