import NIOConcurrencyHelpers
import NIOCore

/// Links ``InProcessBroker``s in one process: the embedded default for a single node, and for tests.
public final class InProcessHub: Sendable {
    private let brokers = NIOLockedValueBox<[String: InProcessBroker]>([:])

    public init() {}

    /// A broker for node `node` on this hub.
    public func broker(node: String) -> InProcessBroker {
        let broker = InProcessBroker(node: node, hub: self)
        self.add(broker)
        return broker
    }

    fileprivate func add(_ broker: InProcessBroker) {
        self.brokers.withLockedValue { $0[broker.node] = broker }
    }

    func deliver(_ envelope: Envelope) {
        let brokers = self.brokers.withLockedValue { Array($0.values) }
        for broker in brokers where broker.node != envelope.origin { broker.receive(envelope) }
    }

    func presence(_ room: Room) -> Int {
        self.brokers.withLockedValue { $0.values.reduce(0) { $0 + $1.localPresence(room) } }
    }

    var nodes: [String] { self.brokers.withLockedValue { $0.keys.sorted() } }

    func remove(_ node: String) {
        _ = self.brokers.withLockedValue { $0.removeValue(forKey: node) }
    }
}

/// A ``Broker`` that hands envelopes to the other brokers of its ``InProcessHub``.
public final class InProcessBroker: Broker {
    public let node: String
    private let hub: InProcessHub
    private let state = NIOLockedValueBox<(rooms: Set<Room>, presence: [Room: Int])>(([], [:]))
    private let sink = NIOLockedValueBox<InboundSink?>(nil)

    init(node: String, hub: InProcessHub) {
        self.node = node
        self.hub = hub
    }

    public func attach(_ sink: InboundSink) {
        self.sink.withLockedValue { $0 = sink }
    }

    /// A single node with nobody to talk to.
    public convenience init(node: String) {
        let hub = InProcessHub()
        self.init(node: node, hub: hub)
        hub.add(self)  // on its hub, so that presence counts its own members (a lone portico-chat said 0)
    }

    public func publish(_ envelope: Envelope) throws {
        self.hub.deliver(envelope)
    }

    /// Never: the other nodes' planes take envelopes as they come.
    public var isBackedUp: Bool { false }

    public func waitForSpace() async {}

    public func subscribe(_ room: Room) async throws {
        _ = self.state.withLockedValue { $0.rooms.insert(room) }
    }

    public func unsubscribe(_ room: Room) async throws {
        _ = self.state.withLockedValue { $0.rooms.remove(room) }
    }

    func receive(_ envelope: Envelope) {
        let subscribed = self.state.withLockedValue { $0.rooms.contains(envelope.room) }
        guard subscribed, let sink = self.sink.withLockedValue({ $0 }) else { return }
        sink.receiveAlone(envelope)  // from the publisher's plane: a hop to the receiver's, in order (or none)
    }

    public func setPresence(_ room: Room, members: Int) async {
        self.state.withLockedValue { $0.presence[room] = members > 0 ? members : nil }
    }

    func localPresence(_ room: Room) -> Int {
        self.state.withLockedValue { $0.presence[room] ?? 0 }
    }

    public func presence(_ room: Room) async -> Int {
        self.hub.presence(room)
    }

    /// Entries in the per-room tables (rooms subscribed, local presence): 0 once no room has local members.
    package var roomStateCount: Int { self.state.withLockedValue { $0.rooms.count + $0.presence.count } }

    public func liveNodes() async -> [String] {
        self.hub.nodes
    }

    /// Leaves the hub (a node shutting down).
    public func shutdown() {
        self.hub.remove(self.node)
        self.sink.withLockedValue { $0 = nil }
    }
}
