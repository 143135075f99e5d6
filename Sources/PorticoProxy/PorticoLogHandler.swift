import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A swift-log handler writing one line per event to standard error, as text or as JSON.
public struct PorticoLogHandler: LogHandler {
    /// The line format.
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let format: Format

    /// - Parameters:
    ///   - label: the logger's label, printed on every line.
    ///   - format: text (default) or JSON lines.
    ///   - level: the lowest level written. Default `.info`.
    public init(label: String, format: Format = .text, level: Logger.Level = .info) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let line: String
        switch self.format {
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            line =
                "\(timestamp()) \(event.level) \(self.label): \(event.message)\(fields.isEmpty ? "" : " " + fields)\n"
        case .json:
            var object = "{\"ts\":\"\(timestamp())\",\"level\":\"\(event.level)\",\"logger\":\(jsonString(self.label)),"
            object += "\"msg\":\(jsonString("\(event.message)"))"
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                object += ",\(jsonString(key)):\(jsonString("\(value)"))"
            }
            line = object + "}\n"
        }
        outputLock.withLock {
            var line = line
            line.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
        }
    }
}

private let outputLock = NIOLock()

private func timestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var parts = tm()
    var seconds = now.tv_sec
    gmtime_r(&seconds, &parts)
    func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
    let millis = Int(now.tv_nsec / 1_000_000)
    let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
}

private func jsonString(_ text: String) -> String {
    JSONValue.string(text).rendered
}
