import Foundation

/// A serial executor with a thread of its own. The publisher runs on it, so
/// its blocking file-system work (copying gigabytes, fsync) never occupies
/// the threads that serve HTTP (and the PostgreSQL whiteboard storage runs its synchronous transactions on a few).
/// The thread ends when the executor goes away.
public final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    /// What the thread holds on to: the job queue, not the executor.
    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        var jobs: [UnownedJob] = []
        var stopped = false
        /// Only used while jobs are queued, and a queued job keeps its actor
        /// (and so this executor) alive.
        var executor: UnownedSerialExecutor?

        func run() {
            while true {
                condition.lock()
                while jobs.isEmpty && !stopped { condition.wait() }
                guard !jobs.isEmpty, let executor else {
                    condition.unlock()
                    return
                }
                let job = jobs.removeFirst()
                condition.unlock()
                job.runSynchronously(on: executor)
            }
        }
    }

    private let queue = Queue()

    public init(name: String) {
        queue.executor = UnownedSerialExecutor(ordinary: self)
        let thread = Thread { [queue] in queue.run() }
        thread.name = name
        thread.start()
    }

    deinit {
        queue.condition.lock()
        queue.stopped = true
        queue.condition.signal()
        queue.condition.unlock()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.condition.lock()
        queue.jobs.append(job)
        queue.condition.signal()
        queue.condition.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
