import NIOCore

/// A timeout that is cheap to move: per request it stores a deadline, it does not schedule or cancel anything.
///
/// One scheduled task backs it. Setting a deadline later than the task's fire time only records it; when the
/// task fires early it re-arms for what is left. Only a deadline *earlier* than the fire time schedules anew.
/// Every task is scheduled at most `period` ahead, so connections whose deadlines alternate between a long and
/// a short timeout (idle 60 s, header 10 s) never reschedule per request: the fire time is always at or before
/// the next short deadline. Event loop bound: use it from its loop only.
final class LazyTimer {
    private let eventLoop: any EventLoop
    private let period: TimeAmount
    private let onExpiry: () -> Void
    private var deadline: NIODeadline?
    private var firesAt: NIODeadline?
    private var task: Scheduled<Void>?

    /// - Parameters:
    ///   - eventLoop: the loop of the channel the timer belongs to.
    ///   - period: the longest a task is scheduled ahead; the shortest timeout this timer is used for.
    ///   - onExpiry: runs on the loop when a deadline passes (once per deadline).
    init(eventLoop: any EventLoop, period: TimeAmount, onExpiry: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.period = period
        self.onExpiry = onExpiry
    }

    /// Expires `timeout` from now, replacing any deadline set before.
    func set(in timeout: TimeAmount) {
        let deadline = NIODeadline.now() + timeout
        self.deadline = deadline
        if let firesAt = self.firesAt, firesAt <= deadline { return }
        self.schedule(at: min(deadline, NIODeadline.now() + self.period))
    }

    /// No deadline: nothing expires until the next `set`. The backing task, if any, fires once and stops.
    func clear() {
        self.deadline = nil
    }

    /// Clears and cancels the backing task (the owner goes away).
    func cancel() {
        self.deadline = nil
        self.firesAt = nil
        self.task?.cancel()
        self.task = nil
    }

    private func schedule(at time: NIODeadline) {
        self.task?.cancel()
        self.firesAt = time
        // Strongly: the task holds the timer until it fires or is cancelled, no longer (and a weak reference
        // would give the timer a side table).
        self.task = self.eventLoop.assumeIsolated().scheduleTask(deadline: time) { self.fired() }
    }

    private func fired() {
        self.firesAt = nil
        self.task = nil
        guard let deadline = self.deadline else { return }
        let now = NIODeadline.now()
        if now < deadline {
            self.schedule(at: min(deadline, now + self.period))
        } else {
            self.deadline = nil
            self.onExpiry()
        }
    }
}
