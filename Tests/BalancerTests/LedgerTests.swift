@testable import Balancer
import Testing

/// The ledger's running totals against a plain sum, through random adds, releases, finishes and
/// expiries.
@Suite struct LedgerTests {
    @Test func theLoadSinceATimeIsTheSumOfLiveReservationsAfterIt() {
        var random = SeededGenerator(seed: 17)
        var ledger = ReservationLedger()
        var live: [UInt64] = []
        var now: Milliseconds = 0
        for step in 0..<800 {
            now += UInt64(random.below(3))
            switch random.below(10) {
            case 0..<6:
                let token = UInt64(step + 1)
                for slot in Set((0..<(1 + random.below(2))).map { _ in Int32(random.below(6)) }) {
                    ledger.add(
                        Reservation(
                            token: token, slot: slot, workerID: "w\(slot)", role: .pdfusion, createdAt: now,
                            prefillTokens: random.below(5_000), kvBlocks: random.below(300), tier: ResourceTier()
                        ),
                        endsAt: random.below(2) == 0 ? now + 50 : nil, requestID: "r\(token)"
                    )
                }
                live.append(token)
            case 6, 7:
                guard !live.isEmpty else { continue }
                ledger.release(token: live.remove(at: random.below(live.count)))
            case 8:
                guard let token = live.randomElement(using: &random) else { continue }
                _ = ledger.finish(requestID: "r\(token)", slot: Int32(random.below(6)))
            default:
                _ = ledger.expire(createdAtOrBefore: now >= 200 ? now - 200 : 0, now: now)
            }
            let time = now >= 30 ? now - UInt64(random.below(30)) : 0
            for slot in Int32(0)..<6 {
                let after = (1...UInt64(step + 1)).flatMap { ledger.reservations(token: $0) }.filter { $0.slot == slot && $0.createdAt > time }
                let since = ledger.since(time, slot: slot)
                #expect(since.requests == after.count)
                #expect(since.prefillTokens == after.reduce(0) { $0 + $1.prefillTokens })
                #expect(since.kvBlocks == after.reduce(0) { $0 + $1.kvBlocks })
                if since.requests != after.count { return }
            }
        }
    }
}

extension SeededGenerator: RandomNumberGenerator {}
