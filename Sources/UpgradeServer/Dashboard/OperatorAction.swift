import Foundation
import UpgradeCore

/// An operator action of the fleet page, and the whiteboard write it is: the same put or release the operator could
/// make by hand on a mount (`echo approve > udb/upgrades/N/control`, `rmdir udb/locks/L/H`,
/// `echo 2 > udb/locks/L/capacity`), checked by the ledger's rules. Pure.
enum OperatorAction: Sendable, Equatable {
    case control(upgrade: Int64, word: ControlWord)
    case release(lock: String, holder: String)
    case capacity(lock: String, capacity: Int64)

    /// Why a form is not an action (the body a refused whiteboard write has too).
    struct Refused: Error, Equatable {
        let body: WhiteboardErrorBody
    }

    /// The form's `action` field → the control word it writes (`resume` is `go`).
    static let controlActions: [String: ControlWord] = ["pause": .pause, "resume": .go, "abort": .abort, "approve": .approve]

    /// The action a form posts, or why it is not one. Names and numbers are checked by `WhiteboardPath` and the rules
    /// when the write is made; here only that the fields are there.
    static func parse(_ form: [String: String]) -> Result<OperatorAction, Refused> {
        func missing(_ what: String) -> Result<OperatorAction, Refused> {
            .failure(Refused(body: WhiteboardErrorBody(error: "the form has no \(what)", code: .malformed)))
        }
        guard let name = form["action"] else { return missing("action") }
        if let word = controlActions[name] {
            guard let text = form["upgrade"], let version = Int64(text), version > 0 else { return missing("upgrade number") }
            return .success(.control(upgrade: version, word: word))
        }
        switch name {
        case "release":
            guard let lock = form["lock"], let holder = form["holder"] else { return missing("lock and holder") }
            return .success(.release(lock: lock, holder: holder))
        case "capacity":
            guard let lock = form["lock"] else { return missing("lock") }
            guard let text = form["capacity"]?.trimmingWhitespace(), let capacity = Int64(text), capacity >= 0 else {
                return .failure(Refused(body: WhiteboardErrorBody(error: "capacity must be a non-negative whole number", code: .malformed)))
            }
            return .success(.capacity(lock: lock, capacity: capacity))
        default:
            let known = (controlActions.keys.sorted() + ["release", "capacity"]).joined(separator: ", ")
            return .failure(Refused(body: WhiteboardErrorBody(
                error: "unknown action \"\(HTTPHandler.clean(name))\" (known: \(known))", code: .malformed)))
        }
    }

    /// The whiteboard write.
    var write: (op: WhiteboardOp, path: String, content: [UInt8]?) {
        switch self {
        case .control(let version, let word): (.put, "upgrades/\(version)/control", Array((word.rawValue + "\n").utf8))
        case .release(let lock, let holder): (.release, "locks/\(lock)/\(holder)", nil)
        case .capacity(let lock, let capacity): (.put, "locks/\(lock)/capacity", Array("\(capacity)\n".utf8))
        }
    }

    /// What was done, for the page and the log.
    var summary: String {
        switch self {
        case .control(let version, let word): "upgrades/\(version)/control is now \(word.rawValue)"
        case .release(let lock, let holder): "released holder \(holder) of lock \(lock)"
        case .capacity(let lock, let capacity): "locks/\(lock)/capacity is now \(capacity)"
        }
    }
}

/// `application/x-www-form-urlencoded` and query strings: `a=1&b=x+y%21` → ["a": "1", "b": "x y!"] (a later field of
/// the same name wins; a field that does not decode is dropped).
enum FormFields {
    static func parse(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]), let value = decode(parts.count > 1 ? parts[1] : "") else { continue }
            fields[name] = value
        }
        return fields
    }

    private static func decode(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}

/// One event of a `text/event-stream` (server-sent events): each line of `data` becomes a `data:` line.
enum ServerSentEvent {
    static func encode(event: String, data: String) -> String {
        var out = "event: \(event)\n"
        let lines = data.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        for line in lines.split(separator: "\n", omittingEmptySubsequences: false) { out += "data: \(line)\n" }
        return out + "\n"
    }
}
