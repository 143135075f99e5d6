// The routes the request fuzz targets forward through: one as it is, one that strips a prefix and rewrites Host.

import PorticoConfig
import PorticoRouting

enum FuzzRoutes {
    static let all = RouteTable([
        RouteConfiguration(pool: "app"),
        RouteConfiguration(pool: "app", stripPrefix: "/api", preserveHost: false),
    ]).routes

    /// One of ``all``, chosen by the input.
    static func pick(_ choices: inout FuzzChoices) -> Route {
        Self.all[choices.below(Self.all.count)]
    }
}
