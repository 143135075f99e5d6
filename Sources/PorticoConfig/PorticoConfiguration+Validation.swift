extension PorticoConfiguration {
    /// Checks what only the whole configuration can tell: references between sections, duplicates, combinations.
    ///
    /// - Parameters:
    ///   - marks: line:column of values by key path, when the configuration came from a file.
    /// - Returns: every problem found; empty when the configuration can be served.
    public func validate(marks: [String: (line: Int, column: Int)] = [:]) -> [ConfigurationError] {
        var errors: [ConfigurationError] = []
        func fail(_ path: String, _ message: String) {
            let mark = marks[path]
            errors.append(ConfigurationError(path: path, line: mark?.line, column: mark?.column, message: message))
        }

        if self.listeners.isEmpty { fail("listeners", "at least one listener is required") }
        var seenAddresses: Set<HostPort> = []
        for (index, listener) in self.listeners.enumerated() where !seenAddresses.insert(listener.address).inserted {
            fail("listeners[\(index)].address", "\(listener.address) is listed twice")
        }
        if let admin = self.admin, seenAddresses.contains(admin.address) {
            fail("admin.address", "\(admin.address) is also a listener")
        }

        let hasTLSListener = self.listeners.contains { $0.tls != nil }
        for (index, listener) in self.listeners.enumerated() where listener.redirectHTTPS {
            if listener.tls != nil {
                fail("listeners[\(index)].redirect_https", "redirect_https belongs on a plain listener, not a TLS one")
            } else if !hasTLSListener {
                fail("listeners[\(index)].redirect_https", "there is no TLS listener to redirect to")
            }
        }
        if self.routes.isEmpty { fail("routes", "at least one route is required") }
        let poolNames = Set(self.pools.map(\.name))
        for (index, route) in self.routes.enumerated() where !poolNames.contains(route.pool) {
            let known = self.pools.map(\.name).joined(separator: ", ")
            fail("routes[\(index)].pool", "no pool named \"\(route.pool)\" (pools: \(known.isEmpty ? "none" : known))")
        }

        for pool in self.pools {
            let path = "pools.\(pool.name)"
            if pool.backends.isEmpty && pool.discovery == nil {
                fail(path, "a pool needs backends or discovery")
            }
            var ids: Set<String> = []
            for (index, backend) in pool.backends.enumerated() where !ids.insert(backend.id).inserted {
                fail("\(path).backends[\(index)]", "backend id \"\(backend.id)\" is used twice in this pool")
            }
            switch pool.policy {
            case .consistentHash:
                if pool.hashKey.isEmpty { fail("\(path).policy", "consistent_hash needs hash_key") }
            case .cookie:
                if pool.stickyCookie == nil { fail("\(path).policy", "the cookie policy needs sticky_cookie") }
            case .roundRobin, .leastConnections, .randomTwo:
                break
            }
            if pool.boundedLoad != nil && pool.policy != .consistentHash {
                fail("\(path).bounded_load", "bounded_load applies to policy consistent_hash only")
            }
            if !pool.hashKey.isEmpty && pool.policy != .consistentHash {
                fail("\(path).hash_key", "hash_key applies to policy consistent_hash only")
            }
            if let health = pool.health, health.timeout > health.interval {
                fail("\(path).health.timeout", "must not be longer than health.interval")
            }
        }
        return errors
    }
}
