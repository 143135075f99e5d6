import PorticoConfig
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The README's examples are configuration users copy: they must load.
@Suite struct ReadmeExampleTests {
    static func readme() -> String {
        let path = String(#filePath.split(separator: "/").dropLast(3).joined(separator: "/"))
        guard let file = fopen("/" + path + "/README.md", "r") else { return "" }
        defer { fclose(file) }
        var text = ""
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 { text += String(cString: line!) }
        free(line)
        return text
    }

    /// Every ```yaml block of the README that names listeners, routes and pools.
    static func completeExamples() -> [String] {
        Self.readme().components("```yaml\n").dropFirst().compactMap { part in
            guard let end = part.firstRange(of: "```") else { return nil }
            let block = String(part[..<end.lowerBound])
            return block.contains("listeners:") && block.contains("routes:") && block.contains("pools:") ? block : nil
        }
    }

    @Test func everyCompleteExampleLoads() throws {
        let examples = Self.completeExamples()
        #expect(examples.count >= 5)
        for example in examples {
            do {
                _ = try PorticoConfiguration.load(yaml: example, environment: ["PORTICO_ADMIN_TOKEN": "t"])
            } catch {
                Issue.record("README example does not load:\n\(error)\n---\n\(example)")
            }
        }
    }
}

extension String {
    fileprivate func components(_ separator: String) -> [Substring] {
        self.split(separator: separator, omittingEmptySubsequences: false)
    }
}
