import TOMLKit

/// A bundle's `upgrade.toml`, parsed and checked against the schema in
/// docs/DESIGN.md. Only the manifest's own rules are checked here; whether the
/// files it names exist, and whether its version is new, is `BundleRules`' job.
public struct UpgradeManifest: Sendable, Equatable {
    /// The class of nodes (component) this upgrade replaces.
    public var `class`: String
    /// The system version this bundle publishes.
    public var version: Int64
    /// The version of this class it upgrades from, if named (always `< version`).
    public var fromVersion: Int64?
    public var description: String?
    /// Directory installed as the new release (default `payload`).
    public var payload: String
    /// Scheduling function, transform function and health check as *named* in
    /// the manifest; `nil` when not named (the bundle rules then look for the
    /// default name).
    public var sf: String?
    public var tf: String?
    public var check: String?

    public static let fileName = "upgrade.toml"
    public static let maxDescriptionBytes = 4096
    public static let defaultPayload = "payload"
    public static let knownKeys: Set<String> = [
        "class", "version", "from-version", "description", "payload", "sf", "tf", "check",
    ]

    public init(
        class: String, version: Int64, fromVersion: Int64? = nil, description: String? = nil,
        payload: String = UpgradeManifest.defaultPayload, sf: String? = nil, tf: String? = nil, check: String? = nil
    ) {
        self.class = `class`
        self.version = version
        self.fromVersion = fromVersion
        self.description = description
        self.payload = payload
        self.sf = sf
        self.tf = tf
        self.check = check
    }

    /// Parses and validates the text of an `upgrade.toml`.
    public static func parse(_ text: String) throws(ManifestError) -> UpgradeManifest {
        if text.utf8.contains(0) {
            throw ManifestError(key: nil, problem: "contains a NUL byte")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ManifestError(
                key: nil,
                problem: "is not valid TOML: \(error.description) at line \(error.source.begin.line), column \(error.source.begin.column)"
            )
        } catch {
            throw ManifestError(key: nil, problem: "is not valid TOML: \(error)")
        }

        for key in table.keys.sorted() where !knownKeys.contains(key) {
            let hint = suggestion(for: key).map { " (did you mean \"\($0)\"?)" } ?? ""
            throw ManifestError(key: key, problem: "unknown key\(hint)")
        }

        let className = try requiredString(table, "class")
        guard isValidClassName(className) else {
            throw ManifestError(
                key: "class",
                problem: "\"\(BundlePath.printable(className))\" is not a valid class name: 1 to 64 characters from [a-z0-9._-], starting with a letter or digit"
            )
        }

        guard let versionValue = table["version"] else {
            throw ManifestError(key: "version", problem: "is required")
        }
        let version = try integer(versionValue, key: "version")
        guard version >= 1 else {
            throw ManifestError(key: "version", problem: "must be at least 1, got \(version)")
        }

        var fromVersion: Int64?
        if let value = table["from-version"] {
            let from = try integer(value, key: "from-version")
            guard from >= 1 else {
                throw ManifestError(key: "from-version", problem: "must be at least 1, got \(from)")
            }
            guard from < version else {
                throw ManifestError(key: "from-version", problem: "must be below version \(version), got \(from)")
            }
            fromVersion = from
        }

        var description: String?
        if table["description"] != nil {
            let text = try requiredString(table, "description")
            guard text.utf8.count <= maxDescriptionBytes else {
                throw ManifestError(
                    key: "description",
                    problem: "is \(text.utf8.count) bytes, at most \(maxDescriptionBytes) allowed"
                )
            }
            description = text
        }

        let payload = try optionalPath(table, "payload") ?? defaultPayload
        return UpgradeManifest(
            class: className, version: version, fromVersion: fromVersion, description: description,
            payload: payload,
            sf: try optionalPath(table, "sf"),
            tf: try optionalPath(table, "tf"),
            check: try optionalPath(table, "check")
        )
    }

    /// The grammar of class names, as messages print it.
    public static let classNameGrammar = "[a-z0-9][a-z0-9._-]{0,63}"

    /// `classNameGrammar`.
    public static func isValidClassName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        func allowed(_ b: UInt8, first: Bool) -> Bool {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
            case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): return !first
            default: return false
            }
        }
        for (i, b) in bytes.enumerated() where !allowed(b, first: i == 0) { return false }
        return true
    }

    // MARK: - Helpers

    private static func requiredString(_ table: TOMLTable, _ key: String) throws(ManifestError) -> String {
        guard let value = table[key] else { throw ManifestError(key: key, problem: "is required") }
        guard let string = value.string else {
            throw ManifestError(key: key, problem: "must be a string, got \(typeName(value.type))")
        }
        return string
    }

    private static func integer(_ value: any TOMLValueConvertible, key: String) throws(ManifestError) -> Int64 {
        guard let int = value.int else {
            throw ManifestError(key: key, problem: "must be an integer, got \(typeName(value.type))")
        }
        return Int64(int)
    }

    /// A bundle-relative path such as `sf` or `bin/check`.
    private static func optionalPath(_ table: TOMLTable, _ key: String) throws(ManifestError) -> String? {
        guard table[key] != nil else { return nil }
        let path = try requiredString(table, key)
        if let problem = BundlePath.problem(with: path) {
            throw ManifestError(key: key, problem: "\"\(BundlePath.printable(path))\" \(problem)")
        }
        return path
    }

    private static func typeName(_ type: TOMLType) -> String {
        switch type {
        case .table: "a table"
        case .array: "an array"
        case .string: "a string"
        case .int: "an integer"
        case .double: "a float"
        case .bool: "a boolean"
        case .date: "a date"
        case .time: "a time"
        case .dateTime: "a date-time"
        }
    }

    /// The known key an unknown one was probably meant to be (edit distance ≤ 2).
    private static func suggestion(for key: String) -> String? {
        let lowered = key.lowercased().replacingUnderscores()
        return knownKeys.sorted()
            .map { ($0, editDistance(Array(lowered), Array($0))) }
            .filter { $0.1 <= 2 }
            .min { $0.1 < $1.1 }?.0
    }

    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String {
        String(map { $0 == "_" ? "-" : $0 })
    }
}

/// Why an `upgrade.toml` was refused: the key at fault (if any) and the problem.
public struct ManifestError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The offending key, or `nil` when the document as a whole is at fault.
    public let key: String?
    public let problem: String

    public init(key: String?, problem: String) {
        self.key = key
        self.problem = problem
    }

    public var description: String {
        if let key { return "upgrade.toml: key \"\(key)\" \(problem)" }
        return "upgrade.toml \(problem)"
    }
}

/// Rules for paths inside a bundle (relative, `/`-separated), shared by the
/// manifest and the bundle rules.
public enum BundlePath {
    public static let maxComponentBytes = 255
    public static let maxPathBytes = 1024

    /// `nil` when `path` is an acceptable bundle-relative path, else the problem.
    public static func problem(with path: String) -> String? {
        if path.isEmpty { return "is an empty path" }
        if path.hasPrefix("/") { return "is an absolute path" }
        if let scalar = path.unicodeScalars.first(where: isControl) {
            return "contains the control character U+\(hex4(scalar.value))"
        }
        if path.utf8.count > maxPathBytes {
            return "is \(path.utf8.count) bytes long, at most \(maxPathBytes) allowed"
        }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "has an empty path component" }
            if component == ".." { return "contains \"..\"" }
            if component == "." { return "contains a \".\" component" }
            if component.utf8.count > maxComponentBytes {
                return "has a component of \(component.utf8.count) bytes, at most \(maxComponentBytes) allowed"
            }
        }
        return nil
    }

    /// C0 and C1 control characters and DEL.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

extension BundlePath {
    /// Makes control characters visible in messages (they must stay one line).
    public static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
