import NIOCore

/// The epoch and last sequence a node publishes under, per room (a value the relay's data plane owns).
///
/// Rooms with local members keep theirs while they have members. When the last member leaves, the room's entry
/// moves to a capped table of rooms without local members (a presence update right after, a rejoin soon, or
/// an announcer in no room goes on with the same epoch and sequence). Once evicted from there it goes with its
/// epoch: the next message into the room starts a fresh epoch at sequence 1, which receivers that kept members
/// all along take as a new baseline, exactly as after a node restart (a reused epoch from sequence 1 would be
/// dropped by them as duplicates). What an epoch change gives up, here as at a restart: a message lost just
/// before the first one of the new epoch is not counted; and should the broker re-send, after a Redis
/// reconnect, an unconfirmed batch holding messages of both epochs, a receiver that already had some of them
/// can deliver those again, since it cannot tell which epoch is the older.
struct OutgoingSequences {
    /// Rooms without local members whose outgoing sequence is remembered, at most.
    static let maxUnjoinedRooms = 1_024

    private var joined: [Room: (epoch: UInt64, sequence: UInt64)] = [:]
    private var unjoined: [Room: (epoch: UInt64, sequence: UInt64, stamp: UInt64)] = [:]
    /// The rooms of `unjoined` in the order they came in, with the stamp of that entry: an entry whose room has
    /// since been joined (or forgotten and remembered again) is stale and skipped.
    private var unjoinedOrder = CircularBuffer<(room: Room, stamp: UInt64)>()
    private var stamp: UInt64 = 0

    var joinedCount: Int { self.joined.count }
    var unjoinedCount: Int { self.unjoined.count }

    /// The room's first local member joined: a remembered sequence goes on where it was (same epoch).
    mutating func roomJoined(_ room: Room) {
        if let entry = self.unjoined.removeValue(forKey: room) { self.joined[room] = (entry.epoch, entry.sequence) }
    }

    /// The room's last local member left.
    mutating func roomLeft(_ room: Room) {
        if let entry = self.joined.removeValue(forKey: room) { self.remember(entry, for: room) }
    }

    /// The epoch and sequence of the next message into `room`.
    mutating func next(in room: Room, hasMembers: Bool) -> (epoch: UInt64, sequence: UInt64) {
        if hasMembers {
            var entry = self.joined[room] ?? (Self.newEpoch(), 0)
            entry.sequence += 1
            self.joined[room] = entry
            return entry
        }
        if let entry = self.unjoined[room] {
            self.unjoined[room]?.sequence += 1
            return (entry.epoch, entry.sequence + 1)
        }
        let entry = (epoch: Self.newEpoch(), sequence: UInt64(1))
        self.remember(entry, for: room)
        return entry
    }

    /// Adds `room` (not in `unjoined` yet), forgetting the room remembered longest ago if full.
    private mutating func remember(_ entry: (epoch: UInt64, sequence: UInt64), for room: Room) {
        while self.unjoined.count >= Self.maxUnjoinedRooms, let oldest = self.unjoinedOrder.popFirst() {
            if self.unjoined[oldest.room]?.stamp == oldest.stamp {
                self.unjoined[oldest.room] = nil  // its next message starts a fresh epoch
            }
        }
        // Rooms joined again leave stale entries behind: sweep them before they outnumber the live ones.
        if self.unjoinedOrder.count >= 2 * Self.maxUnjoinedRooms {
            let unjoined = self.unjoined
            self.unjoinedOrder = CircularBuffer(self.unjoinedOrder.filter { unjoined[$0.room]?.stamp == $0.stamp })
        }
        self.stamp += 1
        self.unjoined[room] = (entry.epoch, entry.sequence, self.stamp)
        self.unjoinedOrder.append((room, self.stamp))
    }

    /// Random, so that a restarted node or a room rejoined is not mistaken for loss or duplicates.
    private static func newEpoch() -> UInt64 {
        UInt64.random(in: 1...UInt64.max)
    }
}
