/// The human status page (`GET /` on the admin listener): the same data as `/status`, refreshing itself.
enum StatusPage {
    static func render(_ status: JSONValue) -> String {
        guard case .object(let top) = status else { return "" }
        func field(_ name: String) -> JSONValue? { top.first { $0.0 == name }?.1 }
        func text(_ value: JSONValue?) -> String {
            switch value {
            case .string(let s): return escape(s)
            case .int(let i): return String(i)
            case .double(let d): return String(format2(d))
            case .bool(let b): return b ? "yes" : "no"
            default: return ""
            }
        }
        var html = """
            <!doctype html><html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="2"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Portico status</title>
            <style>
            :root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --line: #8884; }
            body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; }
            h1 { font-size: 1.4rem; margin: 0 0 .2rem } h2 { font-size: 1.1rem; margin: 1.6rem 0 .4rem }
            .meta { opacity: .75 } table { border-collapse: collapse; width: 100% }
            th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line) }
            th { font-weight: 600; font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; opacity: .7 }
            td.n { text-align: right; font-variant-numeric: tabular-nums }
            .pill { padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; color: #fff }
            .up { background: var(--ok) } .draining, .ejected { background: var(--warn) } .down { background: var(--bad) }
            code { font-size: .85rem }
            </style></head><body>
            """
        let load: String
        if case .array(let values)? = field("load_average") {
            load = values.map { text($0) }.joined(separator: " · ")
        } else {
            load = ""
        }
        html += "<h1>Portico \(text(field("version")))</h1>"
        html += "<div class=meta>generation \(text(field("generation"))) · up \(text(field("uptime_s"))) s · "
        html += "\(text(field("connections"))) connections · load \(load)</div>"
        if case .object(let pools)? = field("pools") {
            for (name, pool) in pools {
                guard case .object(let members) = pool else { continue }
                func member(_ key: String) -> JSONValue? { members.first { $0.0 == key }?.1 }
                html += "<h2>\(escape(name)) <span class=meta>· \(text(member("policy")))"
                if case .bool(true)? = member("paused") { html += " · <b>paused</b>" }
                html += " · held \(text(member("held")))"
                if let fingerprint = member("ring_fingerprint") { html += " · ring <code>\(text(fingerprint))</code>" }
                html += "</span></h2><table><tr><th>backend</th><th>address</th><th>state</th><th>active</th>"
                html += "<th>sockets</th><th>requests</th><th>failures</th><th>ws in</th><th>ws out</th></tr>"
                if case .array(let backends)? = member("backends") {
                    for backend in backends {
                        guard case .object(let b) = backend else { continue }
                        func value(_ key: String) -> String { text(b.first { $0.0 == key }?.1) }
                        html += "<tr><td>\(value("id"))</td><td><code>\(value("address"))</code></td>"
                        html += "<td><span class=\"pill \(value("state"))\">\(value("state"))</span></td>"
                        for key in [
                            "active_connections", "websocket_connections", "requests_total", "failures_total",
                            "websocket_messages_in", "websocket_messages_out",
                        ] {
                            html += "<td class=n>\(value(key))</td>"
                        }
                        html += "</tr>"
                    }
                }
                html += "</table>"
            }
        }
        html += "<p class=meta>JSON: <a href=\"/status\">/status</a> · metrics: <a href=\"/metrics\">/metrics</a> · "
        html += "configuration: <a href=\"/config\">/config</a></p></body></html>\n"
        return html
    }

    private static func format2(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }

    private static func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "&": result += "&amp;"
            case "\"": result += "&quot;"
            default: result.append(character)
            }
        }
        return result
    }
}
