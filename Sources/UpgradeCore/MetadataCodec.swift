/// The signed envelope `{"signatures":[{"keyid":…,"sig":…}],"signed":{…}}`.
public enum MetadataCodec {
    /// Signs the canonical JSON of `payload` with each key and returns the
    /// metadata file's bytes: the canonical JSON of the whole envelope
    /// (control characters in strings written as `\u00XX`, see
    /// `JSONValue.canonicalFileBytes`). Signatures are ordered by key id.
    public static func sign<P: TUFPayload>(_ payload: P, keys: [any Ed25519Signing]) -> [UInt8] {
        let signed = payload.toJSON()
        let message = signed.canonicalBytes()
        let signatures: [JSONValue] =
            keys
            .map { key in (TUFKey(ed25519PublicKey: key.publicKey).keyID, key.sign(message)) }
            .sorted { $0.0 < $1.0 }
            .map { .object(["keyid": .string($0.0), "sig": .string(Hex.encode($0.1))]) }
        return JSONValue.object(["signatures": .array(signatures), "signed": signed]).canonicalFileBytes()
    }

    /// Parses a metadata file. Does not verify anything but its shape: the
    /// caller (`TrustedMetadataSet`) checks `signatures` against `signedBytes`,
    /// the canonical JSON of `signed` exactly as received (fields this model
    /// does not know included). A signature that is not hex decodes to no
    /// bytes (it will not verify); two signatures with the same key id are refused.
    public static func decode<P: TUFPayload>(_ bytes: [UInt8], as type: P.Type) throws(TUFError) -> (
        payload: P, signedBytes: [UInt8], signatures: [(keyID: String, signature: [UInt8])]
    ) {
        let envelope = try envelope(bytes, role: P.role)
        return (try P(json: envelope.signed), envelope.signed.canonicalBytes(), envelope.signatures)
    }

    /// The `_type` of a metadata file's `signed` object, without further checks.
    public static func metadataType(of bytes: [UInt8]) -> String? {
        (try? JSONValue.parse(bytes))?["signed"]?["_type"]?.stringValue
    }

    static func envelope(_ bytes: [UInt8], role: TUFRole) throws(TUFError) -> (
        signed: JSONValue, signatures: [(keyID: String, signature: [UInt8])]
    ) {
        let json: JSONValue
        do {
            json = try JSONValue.parse(bytes)
        } catch {
            throw .malformed("\(role.rawValue): \(error)")
        }
        guard let signed = json["signed"], signed.objectValue != nil else {
            throw .malformed("\(role.rawValue): no signed object")
        }
        guard let signaturesJSON = json["signatures"]?.arrayValue else {
            throw .malformed("\(role.rawValue): no signatures array")
        }
        var signatures: [(keyID: String, signature: [UInt8])] = []
        var seen: Set<String> = []
        for entry in signaturesJSON {
            guard let keyID = entry["keyid"]?.stringValue, let sig = entry["sig"]?.stringValue else {
                throw .malformed("\(role.rawValue): a signature needs keyid and sig strings")
            }
            guard seen.insert(keyID).inserted else {
                throw .malformed("\(role.rawValue): two signatures by key \(keyID)")
            }
            signatures.append((keyID, Hex.decode(sig) ?? []))
        }
        return (signed, signatures)
    }
}
