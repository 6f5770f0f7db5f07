import Foundation
import Server
import Serving
import Testing

@Suite struct ClusterClockTests {
    static func wallNow() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    @Test func beforeAnyStampItReadsTheWallClockWithItsOffset() {
        let clock = ClusterClock()
        clock.jumpWallClock(by: 3_600_000)
        let reading = clock.now()
        #expect(reading >= Self.wallNow() + 3_590_000 && reading <= Self.wallNow() + 3_610_000)
    }

    @Test func onceAnchoredWallClockJumpsChangeNothing() async throws {
        let clock = ClusterClock()
        clock.observe(1_000_000)
        let start = clock.now()
        #expect(start >= 1_000_000 && start < 1_001_000)
        clock.jumpWallClock(by: -7_200_000)
        clock.jumpWallClock(by: 86_400_000)
        try await Task.sleep(for: .milliseconds(50))
        let later = clock.now()
        // The jumps are hours; a bound of a minute tells them apart from a slow, loaded machine.
        #expect(later >= start + 40 && later < start + 60_000, "monotonic time only: \(later - start) ms")
    }

    @Test func itFollowsTheReplicatedClockForwardButNeverBack() {
        let clock = ClusterClock()
        clock.observe(5_000_000)
        clock.observe(9_000_000)
        #expect(clock.now() >= 9_000_000)
        clock.observe(1_000)
        #expect(clock.now() >= 9_000_000)
        clock.observe(0)
        #expect(clock.now() >= 9_000_000 && clock.now() < 9_010_000)
    }
}
