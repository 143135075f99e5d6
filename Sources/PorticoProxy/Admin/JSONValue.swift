/// A JSON value with keys kept in the order given, rendered compactly. Enough for the admin API.
enum JSONValue: Sendable {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null

    var rendered: String {
        var output = ""
        self.render(into: &output)
        return output
    }

    private func render(into output: inout String) {
        switch self {
        case .object(let members):
            output += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { output += "," }
                JSONValue.string(key).render(into: &output)
                output += ":"
                value.render(into: &output)
            }
            output += "}"
        case .array(let items):
            output += "["
            for (index, item) in items.enumerated() {
                if index > 0 { output += "," }
                item.render(into: &output)
            }
            output += "]"
        case .string(let text):
            output += "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": output += "\\\""
                case "\\": output += "\\\\"
                case "\n": output += "\\n"
                case "\r": output += "\\r"
                case "\t": output += "\\t"
                case let c where c.value < 0x20:
                    output += "\\u00" + (c.value < 16 ? "0" : "") + String(c.value, radix: 16)
                default: output.unicodeScalars.append(scalar)
                }
            }
            output += "\""
        case .int(let value): output += String(value)
        case .double(let value): output += value.isFinite ? String(value) : "null"
        case .bool(let value): output += value ? "true" : "false"
        case .null: output += "null"
        }
    }
}
