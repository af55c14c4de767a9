#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeCore
import UpgradeFiles

/// A program the manager started in a process group of its own (SF, TF, check, the app's start or stop),
/// recorded in the LDB while it runs, so that a manager killed with -9 can end it at its next start.
public struct HookProcess: Sendable, Equatable {
    /// The group's id: the pid of its leader, the program the manager spawned.
    public var pgid: pid_t
    /// The leader's start time (`/proc/PID/stat` field 22, clock ticks since boot) and the boot it ran in:
    /// a pid reused by another program never matches both.
    public var startTicks: Int64
    public var bootID: String
    /// The session it was started in (the manager's): members of the group are looked for in it only.
    public var session: pid_t
    /// For people: `tf 2`, `stop 1`.
    public var label: String
    /// The app's `start`: once it has returned its group may hold the running app, which must keep running;
    /// only a `start` still running (its leader alive) is ended.
    public var isAppStart: Bool

    public init(pgid: pid_t, startTicks: Int64, bootID: String, session: pid_t, label: String, isAppStart: Bool) {
        self.pgid = pgid
        self.startTicks = startTicks
        self.bootID = bootID
        self.session = session
        self.label = label
        self.isAppStart = isAppStart
    }
}

/// What `/proc/PID/stat` says about a process (the fields the manager uses).
public struct ProcessStat: Sendable, Equatable {
    public var pid: pid_t
    public var state: Character
    public var pgrp: pid_t
    public var session: pid_t
    public var startTicks: Int64

    /// Parses the text of `/proc/PID/stat`; the command name (in parentheses) may hold anything, so the
    /// fields are counted from the last `)`.
    public static func parse(_ text: String) -> ProcessStat? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"),
              let pid = pid_t(String(text[..<open]).trimmingWhitespace()) else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let state = fields[0].first, let pgrp = pid_t(fields[2]), let session = pid_t(fields[3]),
              let start = Int64(fields[19]) else { return nil }
        return ProcessStat(pid: pid, state: state, pgrp: pgrp, session: session, startTicks: start)
    }

    /// A zombie or dead process has ended (it only waits to be reaped).
    public var hasEnded: Bool { state == "Z" || state == "X" }
}

/// The process table as `/proc` shows it.
enum ProcessTable {
    static func stat(_ pid: pid_t) -> ProcessStat? {
        guard let bytes = try? POSIXFiles.readFile("/proc/\(pid)/stat", limit: 4096) else { return nil }
        return ProcessStat.parse(String(decoding: bytes, as: UTF8.self))
    }

    static func all() -> [ProcessStat] {
        ((try? POSIXFiles.listDirectory("/proc")) ?? []).compactMap { pid_t($0) }.compactMap { stat($0) }
    }

    static func bootID() -> String {
        let bytes = (try? POSIXFiles.readFile("/proc/sys/kernel/random/boot_id", limit: 256)) ?? []
        return String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
    }

    /// The record of a program just spawned (nil if it already ended and was reaped).
    static func record(pid: pid_t, label: String, isAppStart: Bool) -> HookProcess? {
        guard let stat = stat(pid) else { return nil }
        return HookProcess(pgid: pid, startTicks: stat.startTicks, bootID: bootID(), session: stat.session,
                           label: label, isAppStart: isAppStart)
    }

    /// The live processes that belong to the recorded group: the leader itself if it is the one recorded, and
    /// members of the group in the recorded session started no earlier than it. Empty for a record of another
    /// boot. A group id stays reserved while any member lives, so while these exist the group is the recorded one.
    static func leftovers(of hook: HookProcess, in table: [ProcessStat], bootID: String) -> (leaderAlive: Bool, members: [ProcessStat]) {
        guard hook.bootID == bootID else { return (false, []) }
        // A pid is not reused while its group lives: another process under the leader's pid means the recorded
        // group is gone, and the id now names someone else's.
        if table.contains(where: { $0.pid == hook.pgid && $0.startTicks != hook.startTicks }) { return (false, []) }
        let live = table.filter { !$0.hasEnded }
        let leaderAlive = live.contains { $0.pid == hook.pgid }
        let members = live.filter { $0.pgrp == hook.pgid && $0.session == hook.session && $0.startTicks >= hook.startTicks }
        return (leaderAlive, members)
    }

    /// The name of the variable that marks programs the manager runs (`NAME=root`), so that one left between
    /// its spawn and its record (a kill -9 of the manager in that window) is still found.
    static let markerName = "UPGRADEFS_MANAGER_ROOT"

    /// What to kill to end the live processes whose environment carries the marker of `root`: their process
    /// groups (negative ids) — the groups the manager made, or that a marked process made (`setsid`), or whose
    /// leader is gone — but by its pid alone a marked process that joined another group (`setpgid` within the
    /// session): the caller's own, or one led by a live unmarked process (the shell that started the manager).
    static func markedTargets(root: String) -> Set<pid_t> {
        let marker = Array((markerName + "=" + root).utf8)
        let own = getpgrp(), me = getpid()
        let live = all().filter { !$0.hasEnded && $0.pid != me }
        let marked = live.filter { stat in
            guard let environ = try? POSIXFiles.readFile("/proc/\(stat.pid)/environ", limit: 1 << 20) else { return false }
            return environ.split(separator: 0).contains(where: { $0.elementsEqual(marker) })
        }
        let markedPids = Set(marked.map(\.pid)), livePids = Set(live.map(\.pid))
        var targets = Set<pid_t>()
        for stat in marked {
            let foreignLeader = livePids.contains(stat.pgrp) && !markedPids.contains(stat.pgrp)
            targets.insert(stat.pgrp == own || foreignLeader ? stat.pid : -stat.pgrp)
        }
        return targets
    }

    /// Ends (SIGKILL) every group or process `markedTargets` finds, and waits (up to `seconds`) until none is
    /// left. `whose` says, for the log, whose programs they are.
    static func endMarked(root: String, whose: String = "unrecorded programs of the previous manager",
                          seconds: Double = 10) -> String? {
        var targets = markedTargets(root: root)
        guard !targets.isEmpty else { return nil }
        let groups = targets.filter { $0 < 0 }.map { -$0 }.sorted(), processes = targets.filter { $0 > 0 }.sorted()
        let deadline = monotonicSeconds() + seconds
        while !targets.isEmpty && monotonicSeconds() < deadline {
            for target in targets { kill(target, SIGKILL) }
            usleep(20_000)
            targets = markedTargets(root: root)
        }
        var what: [String] = []
        if !groups.isEmpty { what.append("process groups " + groups.map(String.init).joined(separator: ", ")) }
        if !processes.isEmpty { what.append("processes " + processes.map(String.init).joined(separator: ", ") + " in the manager's own group") }
        let list = what.joined(separator: " and ")
        return targets.isEmpty ? "ended \(list) (\(whose))"
                               : "\(list) (\(whose)) did not end within \(formatSeconds(seconds)) s of SIGKILL"
    }

    /// Ends the group if it is still the recorded one: SIGKILL to the whole group, then waits (up to
    /// `seconds`) until none of it is left. An app `start` that has returned is left alone (its group is the
    /// app). Returns what was done, for the log; nil when nothing was left.
    static func end(_ hook: HookProcess, seconds: Double = 10) -> String? {
        let boot = bootID()
        let (leaderAlive, members) = leftovers(of: hook, in: all(), bootID: boot)
        if hook.isAppStart && !leaderAlive { return nil }
        guard leaderAlive || !members.isEmpty else { return nil }
        kill(-hook.pgid, SIGKILL)
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            let (alive, rest) = leftovers(of: hook, in: all(), bootID: boot)
            if !alive && rest.isEmpty {
                return "ended process group \(hook.pgid) (\(hook.label)) left running by the previous manager"
            }
            kill(-hook.pgid, SIGKILL)
            usleep(20_000)
        }
        return "process group \(hook.pgid) (\(hook.label)) left by the previous manager did not end within \(formatSeconds(seconds)) s of SIGKILL"
    }
}
