/// Consecutive-result thresholds for active health checks (HAProxy's `rise` and `fall`).
///
/// Pure: the prober feeds it results and acts on the transitions it reports.
public struct HealthTracker: Sendable, Equatable {
    public let rise: Int
    public let fall: Int
    /// The state the tracker has settled on. Backends start up, as HAProxy's do by default.
    public private(set) var isHealthy = true
    private var streak = 0

    public init(rise: Int, fall: Int) {
        self.rise = max(1, rise)
        self.fall = max(1, fall)
    }

    /// A state change caused by one result.
    public enum Transition: Sendable, Equatable {
        case becameHealthy
        case becameUnhealthy
    }

    /// Records one check result.
    ///
    /// - Returns: the transition it completed, if any: `fall` failures in a row take a healthy backend
    ///   down, `rise` successes in a row bring an unhealthy one back.
    public mutating func record(success: Bool) -> Transition? {
        if success == self.isHealthy {
            self.streak = 0
            return nil
        }
        self.streak += 1
        if self.isHealthy && self.streak >= self.fall {
            self.isHealthy = false
            self.streak = 0
            return .becameUnhealthy
        }
        if !self.isHealthy && self.streak >= self.rise {
            self.isHealthy = true
            self.streak = 0
            return .becameHealthy
        }
        return nil
    }
}
