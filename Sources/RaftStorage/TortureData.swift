/// The deterministic contents the crash-safety child writes and the tests verify: an entry's
/// or snapshot's bytes follow from its index alone.
public enum TortureData {
    public static func entry(_ index: UInt64) -> [UInt8] {
        let length = 16 + Int(index % 200)
        return (0..<length).map { UInt8(truncatingIfNeeded: index &* 31 &+ UInt64($0)) }
    }

    public static func snapshot(_ index: UInt64) -> [UInt8] {
        // Compressible but not trivial: 64 KiB of a slowly varying pattern.
        (0..<65_536).map { UInt8(truncatingIfNeeded: (UInt64($0) / 7) &+ index) }
    }
}
