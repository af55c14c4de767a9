/// The rule for symbolic links in a directory that is installed as a release (the bundle's payload as the
/// manager copies it to `gen/N/release/`): each link, resolved from its own directory, must stay inside that
/// directory. Absolute targets leave it; so does a `..` above its top, also through other links of the same
/// tree. Pure: paths and link texts in, problems out. The judgement is `BundleRules`'s, applied to the
/// installed directory rather than the whole bundle (`payload: ""`: the release itself is the top no link
/// may climb above).
public enum ReleaseLinks {
    /// A link of the release: its path relative to the release directory and its text, as `readlink` returned it.
    public typealias Link = ValidatedBundle.Symlink

    /// One line per link that leaves the directory (empty when every link stays inside), in the links' order.
    public static func problems(_ links: [Link]) -> [String] {
        let byPath = Dictionary(links.map { ($0.path, BundleEntry.Kind.symlink(target: $0.target)) }, uniquingKeysWith: { a, _ in a })
        return links.compactMap { link in
            BundleRules.symlinkProblem(path: link.path, target: link.target, byPath: byPath, payload: "").map {
                "symbolic link \(BundlePath.printable(link.path)) -> \(BundlePath.printable(link.target)) leaves the release (\($0))"
            }
        }
    }
}
