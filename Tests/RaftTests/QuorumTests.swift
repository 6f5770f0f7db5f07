import PropertyBased
import Raft
import Testing

/// Quorum math for simple and joint configurations, checked against brute-force definitions.
@Suite struct QuorumTests {
    /// The definition: the largest index that at least a majority of voters hold.
    static func referenceCommit(_ acked: [LogIndex]) -> LogIndex {
        let quorum = acked.count / 2 + 1
        return acked.filter { candidate in acked.filter { $0 >= candidate }.count >= quorum }.max() ?? 0
    }

    @Test func majorityCommitIndexIsTheLargestIndexAMajorityHolds() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...20).array(of: 1...9)) { acked in
            let config = MajorityConfig((1...NodeID(acked.count)).map { $0 })
            let commit = config.committedIndex { acked[Int($0) - 1] }
            #expect(commit == Self.referenceCommit(acked))
        }
    }

    @Test func missingAcknowledgementsCountAsZero() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 1...20).array(of: 1...9), Gen.int(in: 0...8)) { acked, missing in
            let config = MajorityConfig((1...NodeID(acked.count)).map { $0 })
            let known = min(missing, acked.count)
            let commit = config.committedIndex { Int($0) <= known ? nil : acked[Int($0) - 1] }
            var expected = acked
            for position in 0..<known { expected[position] = 0 }
            #expect(commit == Self.referenceCommit(expected))
        }
    }

    @Test func emptyConfigurationNeverHoldsBackAJointCommit() {
        #expect(MajorityConfig([]).committedIndex { _ in 0 } == .max)
        let joint = JointConfig(incoming: [1, 2, 3], outgoing: [])
        #expect(joint.committedIndex { [1: 5, 2: 5, 3: 1][$0] } == 5)
    }

    @Test func jointCommitIsTheMinimumOfBothHalves() async {
        await propertyCheck(
            input: Gen.uint64(in: 0...20).array(of: 1...7), Gen.uint64(in: 0...20).array(of: 1...7)
        ) { incoming, outgoing in
            // Incoming voters 1..n, outgoing voters overlap from 2 on: shared ids share acks.
            var acks: [NodeID: LogIndex] = [:]
            for (position, index) in incoming.enumerated() { acks[NodeID(position + 1)] = index }
            let outgoingIDs = (0..<outgoing.count).map { NodeID($0 + 2) }
            for (position, id) in outgoingIDs.enumerated() where acks[id] == nil { acks[id] = outgoing[position] }
            let joint = JointConfig(incoming: (1...NodeID(incoming.count)).map { $0 }, outgoing: outgoingIDs)
            let expected = min(
                Self.referenceCommit((1...NodeID(incoming.count)).map { acks[$0]! }),
                Self.referenceCommit(outgoingIDs.map { acks[$0]! })
            )
            #expect(joint.committedIndex { acks[$0] } == expected)
        }
    }

    /// Votes: 0 = rejected, 1 = granted, 2 = no answer.
    static func referenceVote(_ votes: [Int]) -> VoteResult {
        let quorum = votes.count / 2 + 1
        let granted = votes.filter { $0 == 1 }.count
        let missing = votes.filter { $0 == 2 }.count
        if granted >= quorum { return .won }
        if granted + missing >= quorum { return .pending }
        return .lost
    }

    @Test func majorityVoteResultFollowsTheDefinition() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...2).array(of: 1...9)) { votes in
            let config = MajorityConfig((1...NodeID(votes.count)).map { $0 })
            let result = config.voteResult { id in
                switch votes[Int(id) - 1] {
                case 0: false
                case 1: true
                default: nil
                }
            }
            #expect(result == Self.referenceVote(votes))
        }
    }

    @Test func jointVoteNeedsBothHalves() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...2).array(of: 1...5), Gen.int(in: 0...2).array(of: 1...5)) { first, second in
            // Disjoint halves: ids 1... and 101...
            let incoming = (0..<first.count).map { NodeID($0 + 1) }
            let outgoing = (0..<second.count).map { NodeID($0 + 101) }
            let joint = JointConfig(incoming: incoming, outgoing: outgoing)
            func answer(_ code: Int) -> Bool? { code == 2 ? nil : code == 1 }
            let result = joint.voteResult { id in id > 100 ? answer(second[Int(id) - 101]) : answer(first[Int(id) - 1]) }
            let a = Self.referenceVote(first)
            let b = Self.referenceVote(second)
            let expected: VoteResult = (a == .lost || b == .lost) ? .lost : (a == .won && b == .won ? .won : .pending)
            #expect(result == expected)
        }
    }

    @Test func emptyConfigurationWinsEveryVote() {
        #expect(MajorityConfig([]).voteResult { _ in false } == .won)
    }
}
