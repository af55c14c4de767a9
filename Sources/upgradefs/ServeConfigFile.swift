import TOMLKit
import UpgradeFiles

/// `serve --config FILE` (docs/REFERENCE.md, "The server"): TOML whose keys are serve's long option names, e.g.
/// `listen = "0.0.0.0:7420"`, `max-files = 20000`. FILE is read first, then every `*.toml` in its drop-in
/// directory (FILE without `.toml`, plus `.d`: /etc/upgradefs/serve.d/ for /etc/upgradefs/serve.toml) in name
/// order; a later file overrides an earlier one, and a flag on the command line overrides them all. Each file
/// becomes the arguments that would set the same options, so flags and files pass the same checks.
enum ServeConfigFile {
    /// Keys with string values.
    static let stringKeys: Set<String> = ["key", "state", "publish", "listen", "udb", "log-level", "log-format", "operator-token-file"]
    /// Keys with integer values.
    static let integerKeys: Set<String> = [
        "settle-ms", "timestamp-expiry", "max-file-size", "max-bundle-size", "max-files", "lock-ttl", "idle-timeout",
        "max-connections",
    ]

    struct Problem: Error, CustomStringConvertible {
        let file: String
        let key: String?
        let problem: String
        /// The file (or the drop-in directory) could not be read; otherwise its contents are wrong.
        var isUnreadable = false
        var description: String { "\(file): " + (key.map { "key \"\($0)\" " } ?? "") + problem }
    }

    /// The drop-in directory of `path`.
    static func dropInDirectory(of path: String) -> String {
        (path.hasSuffix(".toml") ? String(path.dropLast(5)) : path) + ".d"
    }

    /// `path`, then its drop-ins in name order (none when the directory does not exist).
    static func files(for path: String) throws(Problem) -> [String] {
        let directory = dropInDirectory(of: path)
        guard POSIXFiles.exists(directory) else { return [path] }
        let names: [String]
        do { names = try POSIXFiles.listDirectory(directory) } catch {
            throw Problem(file: directory, key: nil, problem: "cannot be read: \(error)", isUnreadable: true)
        }
        return [path] + names.filter { $0.hasSuffix(".toml") && !$0.hasPrefix(".") }.sorted().map { directory + "/" + $0 }
    }

    /// The arguments every file for `path` amounts to, in order (later ones win).
    static func arguments(for path: String) throws(Problem) -> [String] {
        var arguments: [String] = []
        for file in try files(for: path) {
            let bytes: [UInt8]
            do { bytes = try POSIXFiles.readFile(file, limit: 1 << 20) } catch {
                throw Problem(file: file, key: nil, problem: "cannot be read: \(error)", isUnreadable: true)
            }
            arguments += try self.arguments(fromTOML: String(decoding: bytes, as: UTF8.self), file: file)
        }
        return arguments
    }

    /// The arguments one file's text amounts to (keys sorted, so the result does not depend on the file's order).
    static func arguments(fromTOML text: String, file: String) throws(Problem) -> [String] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw Problem(file: file, key: nil,
                          problem: "is not valid TOML: \(error.description) at line \(error.source.begin.line), column \(error.source.begin.column)")
        } catch {
            throw Problem(file: file, key: nil, problem: "is not valid TOML: \(error)")
        }
        var arguments: [String] = []
        for key in table.keys.sorted() {
            let value = table[key]!
            if stringKeys.contains(key) {
                guard let string = value.string else { throw Problem(file: file, key: key, problem: "must be a string") }
                arguments += ["--" + key, string]
            } else if integerKeys.contains(key) {
                guard let integer = value.int else { throw Problem(file: file, key: key, problem: "must be an integer") }
                arguments += ["--" + key, String(integer)]
            } else {
                let known = (stringKeys.union(integerKeys)).sorted().joined(separator: ", ")
                throw Problem(file: file, key: key, problem: "is not a known key (known: \(known))")
            }
        }
        return arguments
    }
}
