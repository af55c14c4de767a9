import Foundation
import Testing
@testable import UpgradeServer

/// python-tuf (the reference TUF client) accepts the repository: it walks
/// root → timestamp → snapshot → targets and downloads and verifies a target.
/// Runs where `python3 -c "import tuf"` works (`pip install tuf==7.0.1`).
let pythonTUFAvailable: Bool = {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", "import tuf.ngclient"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}()

@Suite(.serialized, .enabled(if: pythonTUFAvailable, "python-tuf is not installed"))
struct InteropTests {
    @Test func pythonTUFUpdaterVerifiesAndDownloads() async throws {
        let fixture = ServerFixture()
        let server = try await InProcessServer.start(fixture.configuration)
        fixture.bundles.make("v1", version: 1) { Files.symlink("bin/app", at: $0 + "/payload/current") }
        fixture.bundles.drop("v1")
        #expect(await eventually { fixture.marker("v1", ".published") != nil })
        fixture.bundles.make("v2", version: 2)
        fixture.bundles.drop("v2")
        #expect(await eventually { fixture.marker("v2", ".published") != nil })

        let client = fixture.temporary.path + "/client"
        Files.mkdir(client + "/metadata")
        Files.mkdir(client + "/downloads")
        let script = """
            import sys
            from tuf.ngclient import Updater
            base = "http://127.0.0.1:\(server.port)"
            u = Updater(metadata_dir="\(client)/metadata", metadata_base_url=base + "/metadata/",
                        target_base_url=base + "/targets/", target_dir="\(client)/downloads",
                        bootstrap=open("\(fixture.metadataDirectory)/1.root.json", "rb").read())
            u.refresh()
            for path in ["1/upgrade.toml", "2/payload/bin/app", "1/payload/current"]:
                info = u.get_targetinfo(path)
                assert info is not None, path
                out = u.download_target(info, filepath="\(client)/downloads/" + path.replace("/", "_"))
                print(path, info.length)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(Files.read(client + "/downloads/2_payload_bin_app") == Files.read(fixture.publishDirectory + "/v2/payload/bin/app"))
        #expect(Files.readText(client + "/downloads/1_payload_current") == "bin/app")
        await server.stop()
    }
}
