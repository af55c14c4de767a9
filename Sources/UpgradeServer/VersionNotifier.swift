import Synchronization

/// Tells long-polling clients (`GET /v1/notify?after=N`) when the timestamp
/// version moves past the one they know.
final class VersionNotifier: Sendable {
    private struct State {
        var current: Int
        var shutDown = false
        var nextID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Int, Never>] = [:]
    }

    private let state: Mutex<State>

    init(current: Int) {
        state = Mutex(State(current: current))
    }

    var current: Int { state.withLock { $0.current } }

    /// `shutdown` was called: waits answer at once from now on (a stream that waits in a loop ends).
    var isShutDown: Bool { state.withLock { $0.shutDown } }

    /// Records a new version and wakes every waiter.
    func publish(_ version: Int) {
        let waiters = state.withLock { state -> [CheckedContinuation<Int, Never>] in
            state.current = max(state.current, version)
            let waiting = Array(state.waiters.values)
            state.waiters.removeAll()
            return waiting
        }
        for waiter in waiters { waiter.resume(returning: version) }
    }

    /// The current version as soon as it is above `after`, or whatever it is
    /// when `timeout` has passed (or the task is cancelled).
    func wait(after: Int, timeout: Duration) async -> Int {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskGroup(of: Int?.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
                        let immediate = self.state.withLock { state -> Int? in
                            if state.current > after || state.shutDown || Task.isCancelled { return state.current }
                            state.waiters[id] = continuation
                            return nil
                        }
                        if let immediate { continuation.resume(returning: immediate) }
                    }
                } onCancel: {
                    self.expire(id)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            var answer = current
            if let first = await group.next() {
                answer = first ?? current
            }
            group.cancelAll()
            return answer
        }
    }

    /// Answers every waiting client now, and every later one at once.
    func shutdown() {
        let (waiters, current) = state.withLock { state -> ([CheckedContinuation<Int, Never>], Int) in
            state.shutDown = true
            let waiting = Array(state.waiters.values)
            state.waiters.removeAll()
            return (waiting, state.current)
        }
        for waiter in waiters { waiter.resume(returning: current) }
    }

    private func expire(_ id: UInt64) {
        let waiter = state.withLock { state -> (CheckedContinuation<Int, Never>, Int)? in
            guard let waiter = state.waiters.removeValue(forKey: id) else { return nil }
            return (waiter, state.current)
        }
        if let (continuation, version) = waiter { continuation.resume(returning: version) }
    }
}
