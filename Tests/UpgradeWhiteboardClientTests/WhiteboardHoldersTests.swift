import Testing
import UpgradeCore
import UpgradeWhiteboardClient

/// The mount's one lock-holder table: the follower's reports and the node's own lock operations race, and only the
/// newer fact about a holder counts.
struct WhiteboardHoldersTests {
    @Test func theNewerFactAboutAHolderWins() {
        let holders = WhiteboardHolders()
        holders.record("locks/roll/n1", held: true, revision: 5)
        holders.apply([WhiteboardHolder(lock: "roll", holder: "n1", node: "n1", acquiredAt: 0, revision: 4, released: true)],
                      replacingAll: false, revision: 4)
        #expect(holders.isHeld("locks/roll/n1"), "an older report does not undo this node's newer acquire")
        holders.record("locks/roll/n1", held: false, revision: 6)
        #expect(holders.held.isEmpty)
        holders.record("locks/a/n1", held: true, revision: 7)
        holders.record("locks/b/n1", held: true, revision: 9)
        holders.apply([WhiteboardHolder(lock: "c", holder: "n2", node: "n2", acquiredAt: 0, revision: 3)],
                      replacingAll: true, revision: 8)
        #expect(holders.held == ["locks/b/n1": 9, "locks/c/n2": 3], "a snapshot at 8 supersedes what was known up to 8")
    }
}
