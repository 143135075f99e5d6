import Yams

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension PorticoConfiguration {
    /// Parses and validates YAML configuration text.
    ///
    /// - Parameters:
    ///   - yaml: the file's contents.
    ///   - environment: values for `${NAME}` and `${NAME:-default}` inside strings; defaults to the process's.
    /// - Throws: ``ConfigurationErrors`` listing every problem, each with its key path and line:column.
    public static func load(
        yaml: String,
        environment: [String: String] = ProcessEnvironment.current
    ) throws(ConfigurationErrors) -> PorticoConfiguration {
        var reader = ConfigurationReader(environment: environment)
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigurationErrors([ConfigurationReader.describe(error)])
        } catch {
            throw ConfigurationErrors([ConfigurationError(path: "", message: "\(error)")])
        }
        guard let root else {
            throw ConfigurationErrors([ConfigurationError(path: "", message: "the configuration is empty")])
        }
        let configuration = reader.configuration(root)
        var errors = reader.errors
        if let configuration {
            // A section with a broken entry (or broken as a whole) was read without it, so what validation says of
            // it is either nothing new ("at least one listener") or about the wrong entry: the entries after a
            // broken one moved up an index. Its own errors already name the key and line.
            let broken = Set(
                errors.compactMap { error in
                    ["listeners", "routes"].first { error.path == $0 || error.path.hasPrefix($0 + "[") }
                }
            )
            errors += configuration.validate(marks: reader.marks).filter { error in
                !broken.contains { section in
                    error.path == section || error.path.hasPrefix(section + "[") || error.path.hasPrefix(section + ".")
                }
            }
        }
        guard errors.isEmpty, let configuration else { throw ConfigurationErrors(errors) }
        return configuration
    }

    /// Reads, parses and validates a configuration file.
    ///
    /// - Parameters:
    ///   - path: the file to read.
    ///   - environment: values for `${NAME}` expansion; defaults to the process's.
    public static func load(
        path: String,
        environment: [String: String] = ProcessEnvironment.current
    ) throws(ConfigurationErrors) -> PorticoConfiguration {
        guard let text = readTextFile(path) else {
            throw ConfigurationErrors([ConfigurationError(path: "", message: "cannot read \(path)")])
        }
        var configuration = try self.load(yaml: text, environment: environment)
        configuration.resolvePaths(relativeTo: directory(of: path))
        return configuration
    }

    /// Makes relative certificate and CA paths relative to `base` (the configuration file's directory).
    mutating func resolvePaths(relativeTo base: String) {
        func resolve(_ path: String) -> String { path.hasPrefix("/") ? path : base + "/" + path }
        for index in self.listeners.indices {
            guard var tls = self.listeners[index].tls else { continue }
            for pair in tls.certificates.indices {
                tls.certificates[pair].cert = resolve(tls.certificates[pair].cert)
                tls.certificates[pair].key = resolve(tls.certificates[pair].key)
            }
            self.listeners[index].tls = tls
        }
        for index in self.pools.indices {
            if let ca = self.pools[index].tls?.ca { self.pools[index].tls?.ca = resolve(ca) }
        }
    }
}

/// The process environment as a dictionary.
public enum ProcessEnvironment {
    public static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}

private func directory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

private func readTextFile(_ path: String) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count > 0 { bytes += chunk[0..<count] }
        if count < chunk.count { break }
    }
    if ferror(file) != 0 { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// Walks the YAML node tree, collecting every error with its key path and mark.
struct ConfigurationReader {
    let environment: [String: String]
    var errors: [ConfigurationError] = []
    /// Marks of the values read, by key path, so that validation can point into the file too.
    var marks: [String: (line: Int, column: Int)] = [:]

    init(environment: [String: String]) {
        self.environment = environment
    }

    static func describe(_ error: YamlError) -> ConfigurationError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return ConfigurationError(path: "", line: mark.line, column: mark.column, message: "YAML: \(problem)")
        default:
            return ConfigurationError(path: "", message: "YAML: \(error)")
        }
    }

    mutating func fail(_ path: String, _ node: Node?, _ message: String) {
        let mark = node?.mark
        self.errors.append(ConfigurationError(path: path, line: mark?.line, column: mark?.column, message: message))
    }

    mutating func remember(_ path: String, _ node: Node) {
        if let mark = node.mark { self.marks[path] = (mark.line, mark.column) }
    }

    // MARK: Generic shapes

    /// A mapping with only the allowed keys; unknown keys are errors (a typo must not be ignored).
    mutating func mapping(_ node: Node, at path: String, allowed: [String]) -> [String: Node]? {
        guard case .mapping(let mapping) = node else {
            self.fail(path, node, "expected a mapping")
            return nil
        }
        self.remember(path, node)
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else {
                self.fail(path, keyNode, "keys must be strings")
                continue
            }
            guard allowed.contains(key) else {
                let suggestion = allowed.first { closeEnough($0, key) }.map { " (did you mean \"\($0)\"?)" } ?? ""
                self.fail(join(path, key), keyNode, "unknown key\(suggestion)")
                continue
            }
            result[key] = value
        }
        return result
    }

    mutating func sequence(_ node: Node, at path: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            self.fail(path, node, "expected a list")
            return nil
        }
        self.remember(path, node)
        return Array(sequence)
    }

    mutating func string(_ node: Node, at path: String) -> String? {
        guard case .scalar(let scalar) = node else {
            self.fail(path, node, "expected a string")
            return nil
        }
        self.remember(path, node)
        return self.expand(scalar.string, at: path, node: node)
    }

    mutating func int(_ node: Node, at path: String, in range: ClosedRange<Int>) -> Int? {
        guard let text = self.string(node, at: path) else { return nil }
        guard let value = Int(text.replacingUnderscores), range.contains(value) else {
            self.fail(path, node, "expected a whole number in \(range.lowerBound)…\(range.upperBound), got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func double(_ node: Node, at path: String, above minimum: Double) -> Double? {
        guard let text = self.string(node, at: path) else { return nil }
        guard let value = Double(text), value > minimum, value.isFinite else {
            self.fail(path, node, "expected a number greater than \(minimum), got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, at path: String) -> Bool? {
        guard let text = self.string(node, at: path) else { return nil }
        switch text {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            self.fail(path, node, "expected true or false, got \"\(text)\"")
            return nil
        }
    }

    mutating func duration(_ node: Node, at path: String) -> Duration? {
        guard let text = self.string(node, at: path) else { return nil }
        guard let value = Duration.parsing(text) else {
            self.fail(path, node, "expected a duration such as 250ms, 2s, 5m or 1h, got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func hostPort(_ node: Node, at path: String) -> HostPort? {
        guard let text = self.string(node, at: path) else { return nil }
        guard let value = HostPort(parsing: text) else {
            self.fail(path, node, "expected host:port (or [v6]:port) with a port in 0…65535, got \"\(text)\"")
            return nil
        }
        return value
    }

    /// `${NAME}` and `${NAME:-default}` inside strings.
    mutating func expand(_ text: String, at path: String, node: Node) -> String? {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = text[...]
        while let open = rest.firstRange(of: "${") {
            result += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                self.fail(path, node, "unterminated ${ in \"\(text)\"")
                return nil
            }
            let body = rest[open.upperBound..<close]
            let name: Substring
            let fallback: Substring?
            if let dash = body.firstRange(of: ":-") {
                name = body[..<dash.lowerBound]
                fallback = body[dash.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            if let value = self.environment[String(name)], !(value.isEmpty && fallback != nil) {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                self.fail(path, node, "environment variable \(name) is not set")
                return nil
            }
            rest = rest[rest.index(after: close)...]
        }
        result += rest
        return result
    }
}

func join(_ path: String, _ key: String) -> String {
    path.isEmpty ? key : "\(path).\(key)"
}

/// Same length ±1 and at most two differing characters: enough to catch typos like `polcy`.
private func closeEnough(_ a: String, _ b: String) -> Bool {
    let a = Array(a)
    let b = Array(b)
    guard abs(a.count - b.count) <= 1, a.count > 2 else { return false }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where b.count > 0 {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count] <= 2
}

extension String {
    fileprivate var replacingUnderscores: String { self.filter { $0 != "_" } }
}
