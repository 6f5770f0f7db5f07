import Balancer
import Testing

/// rtp-llm's rolling block cache keys against vectors computed by upstream's own definition:
/// `rtp_llm/cpp/utils/HashUtil.h` of alibaba/rtp-llm at 4b8d39cd5 (2026-08-20), compiled with
/// g++ 12 (libstdc++) and driven as `initCacheKeys` in `rtp_llm/cpp/cache/KVCacheHashUtil.cc`
/// does (a key per block, the final partial block included, the hash carried across blocks).
@Suite struct RTPLLMCacheKeyTests {
    @Test func keysMatchUpstreamVectors() {
        let a = (0..<40).map { Int32($0 * 7919 % 151_936) }
        #expect(RTPLLMCacheKeys.keys(tokens: a, blockSize: 16) == [-1_555_641_923_107_434_580, 8_332_638_993_207_915_138, 6_008_445_530_291_930_671])
        #expect(RTPLLMCacheKeys.keys(tokens: [1], blockSize: 16) == [-7_046_029_254_386_353_130])
        // Negative ids and the int32 limits (sign extension, arithmetic shift, wrapping sums).
        #expect(RTPLLMCacheKeys.keys(tokens: [-1, .max, .min, 0], blockSize: 2) == [-8_366_447_758_780_315_175, 707_304_115_209_989_270])
        let b = (0..<64).map { Int32(100_000 + $0) }
        #expect(RTPLLMCacheKeys.keys(tokens: b, blockSize: 32) == [5_480_170_326_590_432_162, 7_302_249_691_633_617_529])
    }

    @Test func enginesReportFullBlocksOnly() {
        let a = (0..<40).map { Int32($0 * 7919 % 151_936) }
        let all = RTPLLMCacheKeys.keys(tokens: a, blockSize: 16)
        #expect(RTPLLMCacheKeys.keys(tokens: a, blockSize: 16, fullBlocksOnly: true) == Array(all.prefix(2)))
        #expect(RTPLLMCacheKeys.keys(tokens: a, blockSize: 0).isEmpty)
        // A shared prefix gives shared keys: what cache-aware matching relies on.
        #expect(RTPLLMCacheKeys.keys(tokens: Array(a.prefix(32)) + [9, 9], blockSize: 16).prefix(2) == all.prefix(2))
    }
}
