import Foundation
import Testing
import UpgradeCore
@testable import UpgradeServer

/// Malformed requests get 400 with a reason, unknown things 404.
@Suite(.serialized) struct HTTPTests {
    @Test func badRequestsGetAReason() async throws {
        let fixture = ServerFixture()
        let server = try await InProcessServer.start(fixture.configuration)
        fixture.bundles.make("v1", version: 1)
        fixture.bundles.drop("v1")
        #expect(await eventually { fixture.marker("v1", ".published") != nil })
        let app = await server.publisher.targets.targets["1/payload/bin/app"]!

        let cases: [(path: String, status: Int, reason: String)] = [
            ("/v1/notify?after=abc", 400, "after must be a non-negative integer, got \"abc\""),
            ("/v1/notify?after=-1", 400, "after must be a non-negative integer"),
            ("/v1/notify?after=", 400, "after must be a non-negative integer"),
            ("/v1/notify", 400, "missing query parameter after"),
            ("/metadata/0.root.json", 404, "no such metadata"),
            ("/metadata/01.root.json", 404, "no such metadata"),
            ("/metadata/99.root.json", 404, "no such metadata"),
            ("/metadata/server.key", 404, "no such metadata"),
            ("/metadata/../server.key", 400, "bad metadata path"),
            ("/targets/1/payload/bin/nothex.app", 400, "<64 lowercase hex sha256>.<name>"),
            ("/targets/1/payload/bin/\(app.sha256.uppercased()).app", 400, "<64 lowercase hex sha256>.<name>"),
            ("/targets/1/payload/bin/\(app.sha256)", 400, "<64 lowercase hex sha256>.<name>"),
            ("/targets/1/../../\(app.sha256).app", 400, "bad target path"),
            ("/targets/1/%2e%2e/\(app.sha256).app", 400, "bad target path"),
            ("/targets/1/payload/bin/\(String(repeating: "0", count: 64)).app", 404, "no content with sha256"),
            ("/nothing/here", 404, "not found"),
        ]
        for (path, status, reason) in cases {
            let response = try await server.get(path)
            #expect(response.status == status, "\(path)")
            #expect(response.text.contains(reason), "\(path): \(response.text)")
            #expect(response.text.hasSuffix("\n") && !response.text.dropLast().contains("\n"), "\(path): one line")
        }
        let post = try await server.get("/healthz", method: "POST")
        #expect(post.status == 405)

        // The good path still works, and HEAD gives the length without a body.
        let url = "/targets/1/payload/bin/\(app.sha256).app"
        #expect(try await server.get(url).status == 200)
        let head = try await server.get(url, method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty && head.headers["content-length"] == String(app.length))
        await server.stop()
    }

    @Test func metadataAndBlobsAreReadFromDiskOnEveryRequest() async throws {
        let fixture = ServerFixture()
        let server = try await InProcessServer.start(fixture.configuration)
        let path = fixture.metadataDirectory + "/timestamp.json"
        Files.write(path, "tampered")
        #expect(try await server.get("/metadata/timestamp.json").text == "tampered")
        await server.stop()
    }

    @Test func bigBlobIsStreamedWhole() async throws {
        let fixture = ServerFixture()
        let publisher = try fixture.makePublisher()
        var big = [UInt8](repeating: 0, count: 5 << 20 + 12345)
        for i in stride(from: 0, to: big.count, by: 4096) { big[i] = UInt8(truncatingIfNeeded: i / 4096) }
        fixture.bundles.make("v1", version: 1) { Files.write($0 + "/payload/big.bin", big) }
        fixture.bundles.drop("v1")
        #expect(await publisher.scanOnce() == [.published(bundle: "v1", version: 1)])
        let target = await publisher.targets.targets["1/payload/big.bin"]!
        let server = try await InProcessServer.start(fixture.configuration)
        let response = try await server.get("/targets/1/payload/\(target.sha256).big.bin")
        #expect(response.status == 200)
        #expect(response.headers["content-length"] == String(big.count))
        #expect(response.body == big)
        await server.stop()
    }
}
