#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import UpgradeCore

/// `--log-format json`: one JSON object per line on stderr, for journald and log shippers:
/// `{"label":…,"level":…,"message":…,"metadata":{…},"source":…,"time":"2026-11-30T01:02:03.456Z"}`.
/// Metadata values are written as strings (nested values flattened the way the text format shows them). Nothing is
/// added to what the code logs, which never logs key material.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        let line: JSONValue = [
            "time": .string(Self.timestamp()),
            "level": .string(event.level.rawValue),
            "label": .string(label),
            "message": .string("\(event.message)"),
            "source": .string(event.source),
            "metadata": .object(merged.mapValues { .string("\($0)") }),
        ]
        let bytes = line.canonicalFileBytes() + [UInt8(ascii: "\n")]
        // One write(2) per line: lines of concurrent loggers do not interleave.
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    static func timestamp() -> String { TUFDate.format(Date(), milliseconds: true) }
}
