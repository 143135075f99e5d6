import PorticoRESP
import PorticoRelay
import Testing

@Suite struct RedisURLRedactionTests {
    @Test(arguments: [
        ("redis://user:secret@10.0.0.2:6379/1", "redis://user:***@10.0.0.2:6379/1"),
        ("redis://:secret@redis", "redis://:***@redis"),
        ("redis://secret@redis:6380", "redis://***@redis:6380"),
        ("redis://user:p@ss/w:rd@redis:6379", "redis://user:***@redis:6379"),
        ("rediss://default:secret@[::1]:6379", "rediss://default:***@[::1]:6379"),
        ("user:secret@redis:6379", "user:***@redis:6379"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://redis", "redis://redis"),
        ("", ""),
    ])
    func passwordsAreReplaced(url: String, logged: String) {
        #expect(RedisURL.redactingPassword(in: url) == logged)
        #expect(!RedisURL.redactingPassword(in: url).contains("secret"))
    }
}
