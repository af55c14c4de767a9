extension NetworkErrorText {
    /// `describe(_:endpoint:)` for a request to `url` (`http://HOST:PORT/…`), as the whiteboard's clients make them.
    static func describe(_ error: any Error, url: String) -> String {
        let afterScheme = url.range(of: "://").map { url[$0.upperBound...] } ?? url[...]
        return describe(error, endpoint: String(afterScheme.prefix { $0 != "/" }))
    }
}
