#if canImport(Glibc)
import Glibc
#endif

/// A secret in a file of its own (the server's key file, a node's key file), written and read the one way both
/// key files do it: created with mode 0600 from the first moment and never replaced unless asked; read only while
/// its group and others can neither read nor write it (as ssh does), without the read buffer left in memory. Each
/// failure is said as the words that follow the file's name ("… key file PATH already exists (not overwritten)").
///
/// The caller owns the secret bytes on both sides and wipes them.
public enum SecretFile {
    /// What went wrong with the file, in words that follow its name.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Writes `bytes` to `path` atomically, created with mode 0600 (never wider, not even for a moment). Refuses to
    /// replace an existing file unless `overwrite`.
    public static func write(_ bytes: [UInt8], to path: String, overwrite: Bool) throws(Problem) {
        do {
            try POSIXFiles.writeAtomically(bytes, to: path, mode: 0o600, replace: overwrite)
        } catch where !overwrite && error.errno == EEXIST {
            throw Problem("already exists (not overwritten)")
        } catch {
            throw Problem("cannot write: \(error)")
        }
    }

    /// The file's bytes (at most `limit`). A missing file names `command`, the one that makes it; a file its group
    /// or others may read or write is refused with the fix (`chmod 600 PATH`).
    public static func read(_ path: String, limit: Int, createdBy command: String) throws(Problem) -> [UInt8] {
        do {
            return try POSIXFiles.readSecret(path, limit: limit)
        } catch where error.isNotFound {
            throw Problem("does not exist (create one with `\(command)`)")
        } catch {
            throw Problem(error.explanation ?? "cannot read: \(error)")
        }
    }
}
