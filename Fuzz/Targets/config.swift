// Fuzz target `config`: PorticoConfiguration.load(yaml:environment:) (Sources/PorticoConfig) on arbitrary text.
// Never crashes; a configuration it returns validates clean; and when the text is valid YAML, every error
// points into the file (line and column), except an error about a top-level section the file does not have
// (`listeners`, `routes`: nothing in the file to point at).

import PorticoConfig
import Yams

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    ConfigTarget.run(String(decoding: bytes, as: UTF8.self))
    return 0
}

enum ConfigTarget {
    static let environment = ["PORT": "8080", "BACKEND": "127.0.0.1:9000", "EMPTY": ""]

    /// `FUZZ_CONFIG_TOLERATE_SECTION_ERRORS=1` lets an error whose path is a whole top-level section (such as
    /// "listeners: at least one listener is required" after "listeners: expected a list") pass without a line,
    /// so that a run can look past that known finding (Fuzz/Findings/config-section-error-without-line.yml).
    static let tolerateSectionErrors = getenv("FUZZ_CONFIG_TOLERATE_SECTION_ERRORS").map { String(cString: $0) } == "1"

    static func run(_ text: String) {
        let errors: [ConfigurationError]
        do {
            let configuration = try PorticoConfiguration.load(yaml: text, environment: Self.environment)
            let problems = configuration.validate()
            if !problems.isEmpty { finding("a loaded configuration does not validate: \(problems)") }
            return
        } catch {
            errors = error.errors
        }
        if errors.isEmpty { finding("load threw no errors") }
        // Valid YAML? Then errors must carry their place.
        guard let root = try? Yams.compose(yaml: text) else { return }
        var topLevelKeys: Set<String> = []
        if case .mapping(let mapping) = root {
            for key in mapping.keys { if let name = key.string { topLevelKeys.insert(name) } }
        }
        for error in errors where error.line == nil {
            let section = String(error.path.prefix { $0 != "." && $0 != "[" })
            if Self.tolerateSectionErrors && section == error.path { continue }
            if section.isEmpty || topLevelKeys.contains(section) {
                finding("an error without a line in valid YAML: \(error)\n--- input ---\n\(text)")
            }
        }
    }
}
