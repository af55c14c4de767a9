/// The operator's word in `udb/upgrades/N/control` (the words `WhiteboardRules` accepts there).
public enum ControlWord: String, Sendable, CaseIterable {
    case go, pause, abort, approve, retry

    /// Missing or empty means `go`; `nil` for a word the manager does not know.
    public static func parse(_ text: String?) -> ControlWord? {
        let word = (text ?? "").trimmingWhitespace()
        return word.isEmpty ? .go : ControlWord(rawValue: word)
    }
}
