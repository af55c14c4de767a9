import CSystemd
import Foundation

/// The only module that talks to libsystemd: tells the service manager how a `Type=notify` service is doing,
/// through `sd_notify(3)` (docs/DESIGN.md, "Running under systemd").
///
/// Every call is a no-op unless the service manager set `NOTIFY_SOCKET` (and, for the watchdog,
/// `WATCHDOG_USEC` for this process): run by hand or by a test, a command behaves as if this module
/// did not exist.
public enum ServiceNotifier {
    /// `READY=1`: start-up is complete; systemd starts the units ordered after this one. `status` is shown
    /// by `systemctl status`.
    public static func ready(status: String? = nil) {
        send(["READY=1"] + (status.map { ["STATUS=" + $0] } ?? []))
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` is set): checks done only to tell it something are
    /// skipped otherwise.
    public static var isSupervised: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

    /// `WATCHDOG=1`: the service is alive and well.
    public static func watchdogPing() { send(["WATCHDOG=1"]) }

    /// How often to send `WATCHDOG=1`: half of the unit's `WatchdogSec` (systemd's advice), or nil when the
    /// watchdog is off for this process (`sd_watchdog_enabled`).
    public static var watchdogInterval: Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(microseconds / 2))
    }

    /// When the watchdog is on, starts a thread that runs `isHealthy` every `watchdogInterval` and pings after
    /// each `true`; a check that blocks or says `false` lets the watchdog fire, and systemd restarts the service.
    /// `isHealthy` may block (it runs on its own thread, never on the async pool). Returns whether it started.
    @discardableResult
    public static func startWatchdog(name: String, isHealthy: @escaping @Sendable () -> Bool) -> Bool {
        guard let interval = watchdogInterval else { return false }
        let microseconds = interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000
        let thread = Thread {
            while true {
                if isHealthy() { watchdogPing() }
                usleep(useconds_t(clamping: microseconds))
            }
        }
        thread.name = name
        thread.start()
        return true
    }

    private static func send(_ assignments: [String]) {
        // sd_notify checks NOTIFY_SOCKET itself; 0: the environment is kept for later messages.
        _ = sd_notify(0, assignments.joined(separator: "\n"))
    }
}
