import Foundation

/// A throwaway CA and certificates made with the openssl CLI at test time, in a temporary directory.
public final class TestCertificates: Sendable {
    public let directory: String

    /// The CA certificate that signs every leaf made here.
    public var caPath: String { self.directory + "/ca.pem" }

    /// Creates the directory and the CA.
    public init() throws {
        self.directory = NSTemporaryDirectory() + "portico-certs-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", self.directory + "/ca.key", "-out", self.caPath, "-days", "2", "-subj", "/CN=Portico Test CA",
        ])
    }

    /// A certificate for `names` (the first is the common name) signed by the CA, as `name.pem`/`name.key`.
    ///
    /// - Parameters:
    ///   - file: base name of the files.
    ///   - names: DNS names (subject alternative names).
    ///   - days: validity; 0 makes a certificate that expires the moment it is made.
    /// - Returns: the certificate and key paths.
    @discardableResult
    public func leaf(_ file: String, names: [String], days: Int = 1) throws -> (cert: String, key: String) {
        let base = self.directory + "/" + file
        try self.openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", base + ".key",
            "-out", base + ".csr", "-subj", "/CN=\(names[0])",
        ])
        let extensions = "subjectAltName=" + names.map { "DNS:\($0)" }.joined(separator: ",") + "\n"
        try extensions.write(toFile: base + ".ext", atomically: true, encoding: .utf8)
        try self.openssl([
            "x509", "-req", "-in", base + ".csr", "-CA", self.caPath, "-CAkey", self.directory + "/ca.key",
            "-CAcreateserial", "-out", base + ".pem", "-days", "\(days)", "-extfile", base + ".ext",
        ])
        return (base + ".pem", base + ".key")
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestCertificateError.opensslFailed(arguments.joined(separator: " "))
        }
    }
}

public enum TestCertificateError: Error {
    case opensslFailed(String)
}
