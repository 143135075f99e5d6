import NIOConcurrencyHelpers
import NIOCore

/// A bounded first-in first-out queue from an event loop, which reads a socket, to a task, which works through
/// what was read, one element at a time: the queue tells the event loop when to stop reading and when to read
/// again, so a client that sends faster than its work gets done fills its own TCP window, not this process's
/// memory.
///
/// The producer (a channel handler) ``push(_:)``es what it decoded and asks ``shouldRead()`` before it passes a
/// `read` on: once ``capacity`` elements wait, the answer is no and reading pauses. The consumer's ``next(onResume:)``
/// calls its `onResume` (which calls `channel.read()`) when it has taken the queue down to ``resumeAt`` again.
/// Elements a socket read had already brought in when reading paused are refused by ``push(_:)`` and stay with the
/// producer (at most that read's bytes) until there is room.
///
/// The queue never holds more than ``capacity`` elements. One lock per push and per take, as an `AsyncStream`
/// has. It lives in PorticoRelay, next to the relay's per-member delivery queues, so that chat backends linking
/// the relay (and the tests, which cannot import an executable) share it.
package final class BoundedInbox<Element: Sendable>: Sendable {
    /// Elements at most.
    package let capacity: Int
    /// After a pause, reading resumes once the consumer has brought the queue down to this many.
    package let resumeAt: Int
    private let state: NIOLockedValueBox<StateMachine>

    /// - Parameters:
    ///   - capacity: elements at most (at least 1).
    ///   - resumeAt: the level at which reading resumes after a pause. Default: half of `capacity`.
    package init(capacity: Int, resumeAt: Int? = nil) {
        self.capacity = max(1, capacity)
        self.resumeAt = min(max(0, resumeAt ?? self.capacity / 2), self.capacity - 1)
        self.state = NIOLockedValueBox(StateMachine(capacity: self.capacity, resumeAt: self.resumeAt))
    }

    /// Hands `element` to the consumer. Returns false, without taking it, when the queue is full; an element
    /// pushed after ``finish()`` is taken and discarded.
    package func push(_ element: Element) -> Bool {
        switch self.state.withLockedValue({ $0.push(element) }) {
        case .resume(let waiter):
            waiter.resume(returning: element)
            return true
        case .queued, .discarded:
            return true
        case .full:
            return false
        }
    }

    /// Whether the producer may read more now. False when the queue is full: reading is then paused, and the
    /// consumer's `onResume` fires once it has made room.
    package func shouldRead() -> Bool {
        self.state.withLockedValue { $0.readRequested() }
    }

    /// Ends the queue: the consumer gets what is left, then nil.
    package func finish() {
        self.state.withLockedValue { $0.finish() }?.resume(returning: nil)
    }

    /// The next element, waiting for one; nil once the queue is finished and empty.
    ///
    /// - Parameters:
    ///   - onResume: called (outside the lock) when taking this element ends a pause: the producer should read
    ///     again (`channel.read()`).
    package func next(onResume: () -> Void) async -> Element? {
        switch self.state.withLockedValue({ $0.take() }) {
        case .element(let element, let resume):
            if resume { onResume() }
            return element
        case .finished:
            return nil
        case .empty:
            break
        }
        // Nothing queued: wait, unless something came in between the two locks.
        return await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
            switch self.state.withLockedValue({ $0.takeOrWait(continuation) }) {
            case .element(let element, let resume):  // pushed between the two locks
                continuation.resume(returning: element)
                if resume { onResume() }
            case .finished:
                continuation.resume(returning: nil)
            case .empty:
                break  // resumed by push or finish
            }
        }
    }

    /// Elements waiting now.
    package var count: Int { self.state.withLockedValue { $0.count } }

    /// Whether the consumer has taken everything pushed so far and waits for the next: whatever it was doing
    /// with earlier elements is done (a producer may then do an element's work itself, in order).
    package var isConsumerWaiting: Bool { self.state.withLockedValue { $0.isConsumerWaiting } }

    /// Whether the producer has been told to stop reading and not yet to start again.
    package var isReadingPaused: Bool { self.state.withLockedValue { $0.isReadingPaused } }

    /// The queue's state and its transitions, without locks or tasks.
    struct StateMachine {
        private var elements = CircularBuffer<Element>()
        private var waiter: CheckedContinuation<Element?, Never>?
        private var isFinished = false
        private(set) var isReadingPaused = false
        let capacity: Int
        let resumeAt: Int

        init(capacity: Int, resumeAt: Int) {
            self.capacity = capacity
            self.resumeAt = resumeAt
        }

        var count: Int { self.elements.count }

        var isConsumerWaiting: Bool { self.waiter != nil }

        enum PushAction {
            /// The consumer waits for this element: resume it (outside the lock).
            case resume(CheckedContinuation<Element?, Never>)
            case queued
            case full
            case discarded
        }

        mutating func push(_ element: Element) -> PushAction {
            if self.isFinished { return .discarded }
            if let waiter = self.waiter {
                self.waiter = nil  // it waits only on an empty queue, so order is kept
                return .resume(waiter)
            }
            guard self.elements.count < self.capacity else { return .full }
            self.elements.append(element)
            return .queued
        }

        mutating func readRequested() -> Bool {
            if self.elements.count >= self.capacity { self.isReadingPaused = true }
            return !self.isReadingPaused
        }

        enum TakeAction {
            /// `resume`: this take ended a pause; the producer should read again.
            case element(Element, resume: Bool)
            case empty
            case finished
        }

        mutating func take() -> TakeAction {
            guard let element = self.elements.popFirst() else { return self.isFinished ? .finished : .empty }
            guard self.isReadingPaused, self.elements.count <= self.resumeAt else {
                return .element(element, resume: false)
            }
            self.isReadingPaused = false
            return .element(element, resume: true)
        }

        mutating func takeOrWait(_ waiter: CheckedContinuation<Element?, Never>) -> TakeAction {
            let action = self.take()
            if case .empty = action { self.waiter = waiter }
            return action
        }

        mutating func finish() -> CheckedContinuation<Element?, Never>? {
            self.isFinished = true
            defer { self.waiter = nil }
            return self.waiter
        }
    }
}
